"""Trace context crosses services: a gRPC call made inside a span is served inside a child
span of the same trace, and JSON log lines written there carry the trace id."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.logs import JsonFormatter
from hotline.v1 import ivr_pb2, ivr_pb2_grpc
from ivr.servicer import IvrService
from tests import tls as test_tls


class _Flows(ivr_pb2_grpc.IvrServicer):
    def __init__(self) -> None:
        self.seen_trace_ids: list[int] = []
        self.log_lines: list[str] = []

    async def ListFlows(self, request, context):  # noqa: N802, ANN001
        self.seen_trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "listing flows", (), None)
        self.log_lines.append(JsonFormatter("ivr").format(record))
        return ivr_pb2.ListFlowsReply(flows=[ivr_pb2.FlowInfo(dnis="10000", name="x")])


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    # OpenTelemetry allows setting the global provider once per process; this test needs its
    # own exporter whatever ran before it, so it resets that guard.
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE._done = False
    trace.set_tracer_provider(provider)
    return exp


async def test_grpc_call_joins_the_callers_trace(exporter: InMemorySpanExporter) -> None:
    servicer = _Flows()
    server, port = test_tls.server(
        "ivr", ivr_pb2_grpc.add_IvrServicer_to_server, servicer, IvrService.CALLERS
    )
    await server.start()
    try:
        channel = test_tls.channel("crm", "ivr", port)
        with trace.get_tracer("test").start_as_current_span("caller") as span:
            reply = await ivr_pb2_grpc.IvrStub(channel).ListFlows(ivr_pb2.ListFlowsRequest())
            caller_trace = span.get_span_context().trace_id
            caller_span = span.get_span_context().span_id
        await channel.close()
    finally:
        await server.stop(None)
    assert reply.flows[0].dnis == "10000"
    assert servicer.seen_trace_ids == [caller_trace]
    server_spans = [s for s in exporter.get_finished_spans() if s.name.endswith("/ListFlows")]
    assert server_spans and server_spans[0].parent.span_id == caller_span
    line = json.loads(servicer.log_lines[0])
    assert line["trace_id"] == format(caller_trace, "032x") and line["service"] == "ivr"
