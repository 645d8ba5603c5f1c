"""The event envelope: every field filled, payload in the right oneof, trace context carried,
every payload type routed to a topic."""

from __future__ import annotations

import time
import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider

from common.events import TOPIC_OF, TOPICS, Envelope, envelope, payload_of
from hotline.v1 import events_pb2, gateway_pb2

ONEOF = Envelope.DESCRIPTOR.oneofs_by_name["payload"]
PAYLOAD_TYPES = {f.message_type.name: f.name for f in ONEOF.fields}


def offered() -> events_pb2.CallOffered:
    return events_pb2.CallOffered(
        call_id="c1", ani="5551234", dnis="10000", trunk="fxo", channel="analog", caller_name="Ann"
    )


def test_envelope_fields() -> None:
    before = time.time()
    env = envelope(offered(), "c1", "site-a", "gateway")
    after = time.time()
    assert env.type == "CallOffered"
    parsed = uuid.UUID(env.event_id)
    assert str(parsed) == env.event_id and parsed.version == 4
    assert (env.key, env.site, env.source) == ("c1", "site-a", "gateway")
    assert before - 1 <= env.occurred_at.ToMicroseconds() / 1e6 <= after + 1
    assert env.WhichOneof("payload") == "call_offered"
    assert env.call_offered == offered()


def test_every_envelope_gets_its_own_id() -> None:
    ids = {envelope(offered(), "c1", "s", "gw").event_id for _ in range(50)}
    assert len(ids) == 50


def test_given_event_id_is_kept() -> None:
    """A producer re-announcing a fact passes the original id so consumers drop the repeat."""
    first = envelope(offered(), "c1", "s", "gw")
    again = envelope(offered(), "c1", "s", "gw", event_id=first.event_id)
    assert again.event_id == first.event_id
    assert again.call_offered == first.call_offered


def test_envelope_survives_the_wire() -> None:
    env = envelope(
        events_pb2.CallEnded(
            call_id="c1", reason=events_pb2.END_REASON_CALLER_HANGUP, duration_ms=1234
        ),
        "c1",
        "s",
        "gw",
    )
    back = Envelope.FromString(env.SerializeToString())
    assert back == env
    assert payload_of(back).duration_ms == 1234


def test_trace_context_is_carried() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("incoming-call") as span:
        env = envelope(offered(), "c1", "s", "gw")
        ctx = span.get_span_context()
    assert (
        env.trace["traceparent"]
        == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    )


def test_a_queued_events_trace_is_the_one_it_was_queued_in() -> None:
    """An outbox passes the carrier it took when the event was queued: that one goes on the
    envelope, whatever span is current when it is published (or none)."""
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("the call") as span:
        ctx = span.get_span_context()
        carrier = {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"}
    with tracer.start_as_current_span("the outbox"):
        env = envelope(offered(), "c1", "s", "acd", "id-1", carrier)
    assert dict(env.trace) == carrier
    assert dict(envelope(offered(), "c1", "s", "acd", "id-1", {}).trace) == {}


def test_occurred_at_has_sub_second_precision() -> None:
    stamps = {envelope(offered(), "c1", "s", "gw").occurred_at.nanos for _ in range(5)}
    assert all(0 <= n < 1_000_000_000 for n in stamps) and stamps != {0}


def test_no_trace_outside_a_span() -> None:
    assert dict(envelope(offered(), "c1", "s", "gw").trace) == {}


def test_payload_of() -> None:
    changed = events_pb2.AgentStateChanged(agent_id="a1", state=events_pb2.AGENT_STATE_READY)
    env = envelope(changed, "a1", "s", "acd")
    got = payload_of(env)
    assert isinstance(got, events_pb2.AgentStateChanged) and got == changed


def test_payload_of_an_empty_envelope() -> None:
    with pytest.raises(ValueError, match="envelope e-1 has no payload"):
        payload_of(Envelope(event_id="e-1", type="CallOffered"))


@pytest.mark.parametrize("message", [gateway_pb2.PlayRequest(call_id="c1"), Envelope(event_id="x")])
def test_non_event_message_is_refused(message) -> None:  # noqa: ANN001
    name = message.DESCRIPTOR.name
    with pytest.raises(ValueError, match=f"{name} is not an event payload"):
        envelope(message, "c1", "s", "gw")


def test_topic_of_covers_every_payload_type() -> None:
    assert set(TOPIC_OF) == set(PAYLOAD_TYPES)
    assert set(TOPIC_OF.values()) <= set(TOPICS)
    # the topics the design names, keyed by call or by agent
    assert {TOPIC_OF[t] for t in ("CallOffered", "CallAnswered", "CallBridged", "CallEnded")} == {
        "calls"
    }
    assert TOPIC_OF["AgentStateChanged"] == "agents"
    # the compacted topic holds agent snapshots only: the last record per agent is its state
    assert [t for t, topic in TOPIC_OF.items() if topic == "agents"] == ["AgentStateChanged"]
    assert TOPICS["agents"][1].get("cleanup.policy") == "compact"
    assert TOPIC_OF["RecordingReady"] == "recordings"


@pytest.mark.parametrize("type_name", sorted(PAYLOAD_TYPES))
def test_each_payload_type_round_trips(type_name: str) -> None:
    payload = getattr(events_pb2, type_name)()
    env = envelope(payload, "k", "s", "src")
    assert env.type == type_name
    assert env.WhichOneof("payload") == PAYLOAD_TYPES[type_name]
    assert type(payload_of(env)) is type(payload)
