"""A service with no span exporter records no spans, yet its log lines carry trace ids and the
trace (its id and its sampled flag) travels on to the next service unchanged."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON

from common import tracing
from common.logs import JsonFormatter
from common.tracing import UnexportedTracer

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_SPAN = 0x00F067AA0BA902B7


def carrier(flags: str) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE_ID:032x}-{PARENT_SPAN:016x}-{flags}"}


def test_a_root_span_starts_a_sampled_trace_that_is_propagated_and_logged() -> None:
    tracer = UnexportedTracer(DEFAULT_ON)
    with tracer.start_as_current_span("incoming call") as span:
        ctx = span.get_span_context()
        sent = tracing.inject()
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "call offered", (), None)
        line = json.loads(JsonFormatter("gateway").format(record))
    assert ctx.is_valid and not span.is_recording()
    assert sent["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
    assert (line["trace_id"], line["span_id"]) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert not trace.get_current_span().get_span_context().is_valid  # the span ended with the block


@pytest.mark.parametrize("flags", ["01", "00"])
def test_a_span_from_another_service_continues_its_trace_and_sampled_flag(flags: str) -> None:
    tracer = UnexportedTracer(DEFAULT_ON)
    with tracer.start_as_current_span("consume", context=tracing.extract(carrier(flags))):
        sent = tracing.inject()["traceparent"]
    version, trace_id, span_id, sent_flags = sent.split("-")
    assert (trace_id, sent_flags) == (f"{TRACE_ID:032x}", flags)
    assert int(span_id, 16) not in (0, PARENT_SPAN)  # a span of its own


def test_nested_spans_share_the_trace_with_ids_of_their_own() -> None:
    tracer = UnexportedTracer(DEFAULT_ON)
    with tracer.start_as_current_span("outer") as outer:
        inner = tracer.start_span("inner")
    assert inner.get_span_context().trace_id == outer.get_span_context().trace_id
    assert inner.get_span_context().span_id != outer.get_span_context().span_id
    roots = {tracer.start_span("root").get_span_context().trace_id for _ in range(20)}
    assert len(roots) == 20


def test_the_configured_sampler_decides_the_flag_passed_on() -> None:
    tracer = UnexportedTracer(ALWAYS_OFF)
    span = tracer.start_span("root", context=otel_context.Context())
    assert span.get_span_context().is_valid
    assert span.get_span_context().trace_flags == trace.TraceFlags.DEFAULT


SETUP = (
    "import sys; from opentelemetry import trace; from common import tracing; "
    "tracing.setup('acd', console=sys.argv[1] == 'console'); "
    "print(type(trace.get_tracer_provider()).__name__)"
)


@pytest.mark.parametrize(
    ("exporter", "provider"),
    [("none", "UnexportedTracerProvider"), ("console", "TracerProvider")],
)
def test_setup_records_spans_only_when_they_go_somewhere(exporter: str, provider: str) -> None:
    """In a process of its own: the global tracer provider can be set once per process."""
    out = subprocess.run(
        [sys.executable, "-c", SETUP, exporter], check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == provider
