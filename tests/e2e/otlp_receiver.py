"""A small OTLP/gRPC trace receiver for tests: the services export spans to it exactly as they
would to an OpenTelemetry collector (the official OTLP protos), and tests read what arrived."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    name: str
    attributes: dict[str, str]


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[ReceivedSpan] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(None)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(  # noqa: N802 - the OTLP service's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attrs = {a.key: a.value.string_value for a in span.attributes}
                    received.append(ReceivedSpan(service, span.trace_id.hex(), span.name, attrs))
        with self._lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace_of_call(self, call_id: str) -> dict[str, list[ReceivedSpan]]:
        """The spans of the trace whose root is the gateway's span for `call_id`, by service."""
        with self._lock:
            spans = list(self.spans)
        roots = [s for s in spans if s.attributes.get("hotline.call_id") == call_id]
        if not roots:
            return {}
        trace_id = roots[0].trace_id
        by_service: dict[str, list[ReceivedSpan]] = {}
        for span in spans:
            if span.trace_id == trace_id:
                by_service.setdefault(span.service, []).append(span)
        return by_service
