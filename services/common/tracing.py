"""OpenTelemetry set-up and W3C context propagation through gRPC metadata and Kafka headers.

A call's trace follows it from the gateway's INVITE through IVR, ACD and CRM because every
gRPC call carries `traceparent` in its metadata and every event carries it in the envelope.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

_configured = False


def setup(service: str, console: bool = False, otlp_endpoint: str = "") -> None:
    """Install a tracer provider named after the service (once per process).

    Spans go to stdout with `console` (HOTLINE_TRACE_CONSOLE) and, with `otlp_endpoint`
    (HOTLINE_OTLP_ENDPOINT, e.g. http://otel-collector:4317), to an OpenTelemetry collector
    over OTLP/gRPC, batched in the background so a slow collector never slows a call.
    """
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"hotline-{service}"}))
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=otlp_endpoint, insecure=otlp_endpoint.startswith("http://")
        )
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject() -> dict[str, str]:
    """The current context as a carrier dict (traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> context.Context:
    """A context to start child spans from, out of a carrier from another service."""
    return propagate.extract(dict(carrier))
