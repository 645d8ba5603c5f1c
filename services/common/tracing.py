"""OpenTelemetry set-up and W3C context propagation through gRPC metadata and Kafka headers.

A call's trace follows it from the gateway's INVITE through IVR, ACD and CRM because every
gRPC call carries `traceparent` in its metadata and every event carries it in the envelope.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

_configured = False


class UnexportedTracer(trace.Tracer):
    """Spans that carry a trace's ids and nothing else, for a service with no exporter.

    The SDK records every span (attributes, times, status) and hands it to its processors;
    with none configured that is ~30 µs per span thrown away, dozens of times per call. These
    spans still give log lines their trace and span ids and still propagate the context (the
    same trace id downstream, the sampled flag the SDK's sampler would set), so a collector
    behind another service sees the same traces as before.
    """

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler
        self._ids = RandomIdGenerator()

    def start_span(  # noqa: PLR0913 - the API's signature
        self,
        name: str,
        context: context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else self._ids.generate_trace_id()
        verdict = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
        sampled = verdict.decision is Decision.RECORD_AND_SAMPLE
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        return NonRecordingSpan(
            SpanContext(
                trace_id,
                self._ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(flags),
                trace_state=verdict.trace_state,
            )
        )

    # The API types this as its own private context-manager class; a plain one behaves alike.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]  # noqa: PLR0913
        self,
        name: str,
        context: context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current


class UnexportedTracerProvider(trace.TracerProvider):
    """Hands out `UnexportedTracer`s: what `setup` installs when spans go nowhere."""

    def __init__(self, sampler: Sampler) -> None:
        self._tracer = UnexportedTracer(sampler)

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self._tracer


def setup(service: str, console: bool = False, otlp_endpoint: str = "") -> None:
    """Install a tracer provider named after the service (once per process).

    Spans go to stdout with `console` (HOTLINE_TRACE_CONSOLE) and, with `otlp_endpoint`
    (HOTLINE_OTLP_ENDPOINT, e.g. http://otel-collector:4317), to an OpenTelemetry collector
    over OTLP/gRPC, batched in the background so a slow collector never slows a call. With
    neither, spans carry ids for logs and propagation but record nothing (`UnexportedTracer`).
    """
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"hotline-{service}"}),
        shutdown_on_exit=bool(console or otlp_endpoint),
    )
    if not (console or otlp_endpoint):
        # The SDK's sampler (OTEL_TRACES_SAMPLER, else parent-based always-on) still decides
        # the sampled flag passed on, so other services' collectors see the same traces.
        trace.set_tracer_provider(UnexportedTracerProvider(provider.sampler))
        return
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=otlp_endpoint, insecure=otlp_endpoint.startswith("http://")
        )
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)


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
