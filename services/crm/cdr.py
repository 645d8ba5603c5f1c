"""Folding a call's events into its call detail record — pure logic, no I/O.

A call's events travel on different topics (`calls`, `queues`, `agents`, `recordings`), so
they reach the CRM in any order and, after a consumer restart, more than once. Folding must
therefore be order-independent and idempotent: every order-sensitive field is *claimed* by
the event that set it, recorded in `facts` as (rank, occurred_at, event_id), and a later
event only takes the field over when it outranks that claim. Times come from the envelope's
`occurred_at` (when it happened), never from when we happened to read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from common.events import Envelope, payload_of
from hotline.v1 import events_pb2

#: event types that describe a call and so belong in its CDR.
CDR_EVENTS = frozenset(
    {
        "CallOffered",
        "CallQueued",
        "AgentOffered",
        "CallBridged",
        "CallEnded",
        "CallAbandoned",
        "RecordingReady",
    }
)

#: the columns of a CDR row that this module computes.
COLUMNS = (
    "ani",
    "dnis",
    "trunk",
    "channel",
    "queue",
    "agent_id",
    "extension",
    "started_at",
    "offered_at",
    "queued_at",
    "answered_at",
    "ended_at",
    "wait_ms",
    "talk_ms",
    "end_reason",
    "abandoned",
    "recording_id",
    "recording_path",
    "recording_status",
    "facts",
)


@dataclass
class CdrRecord:
    """The CDR of one call as it stands after the events folded so far."""

    call_id: str
    ani: str = ""
    dnis: str = ""
    trunk: str = ""
    channel: str = ""
    queue: str = ""
    agent_id: str = ""
    extension: str = ""
    started_at: datetime | None = None
    offered_at: datetime | None = None
    queued_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_ms: int | None = None
    talk_ms: int | None = None
    end_reason: str = ""
    abandoned: bool = False
    recording_id: str = ""
    recording_path: str = ""
    #: "complete", or "partial" when the stream broke off (the gateway died mid-call)
    recording_status: str = ""
    #: claims and raw facts behind the derived columns; JSON-serialisable.
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> CdrRecord:
        """Load from anything with the CDR columns as attributes (the ORM row)."""
        values = {name: getattr(row, name) for name in COLUMNS}
        values["facts"] = _deep_copy(values["facts"] or {})
        return cls(call_id=row.call_id, **values)

    def to_row(self, row: Any) -> None:
        """Write the columns back onto an ORM row (a fresh `facts` so the change is seen)."""
        for name in COLUMNS:
            value = getattr(self, name)
            setattr(row, name, _deep_copy(value) if name == "facts" else value)


@dataclass(frozen=True)
class _Fact:
    """When an event happened and which event it was: the tie-breakers of every claim."""

    at: datetime
    at_us: int
    event_id: str


def _kind(env: Envelope) -> str | None:
    """The payload's own type name (trusted over `env.type`, which a producer could get wrong)."""
    return payload_of(env).DESCRIPTOR.name if env.WhichOneof("payload") else None


def call_id_of(env: Envelope) -> str | None:
    """The call an envelope is about, or None when it does not belong in a CDR."""
    if _kind(env) not in CDR_EVENTS:
        return None
    call_id: str = getattr(payload_of(env), "call_id", "")
    return call_id or None


def end_reason_name(reason: events_pb2.EndReason.ValueType) -> str:
    """`END_REASON_CALLER_HANGUP` -> "caller_hangup"."""
    return events_pb2.EndReason.Name(reason).removeprefix("END_REASON_").lower()


def fold(record: CdrRecord, env: Envelope) -> bool:
    """Fold one envelope into `record`; True when any column changed.

    Folding the same envelope again, or a set of envelopes in any order, gives the same record.
    """
    if call_id_of(env) != record.call_id:
        return False
    before = dataclasses.asdict(record)
    at = env.occurred_at.ToDatetime(tzinfo=UTC)
    fact = _Fact(
        at, env.occurred_at.seconds * 1_000_000 + env.occurred_at.nanos // 1000, env.event_id
    )
    record.started_at = _earliest(record.started_at, at)
    payload = payload_of(env)
    _FOLDS[payload.DESCRIPTOR.name](record, payload, fact)
    _derive(record)
    return dataclasses.asdict(record) != before


# -- claims ---------------------------------------------------------------------------------


def _claim(record: CdrRecord, slot: str, rank: int, fact: _Fact, *, earliest: bool = False) -> bool:
    """Take `slot` for this event if it outranks the current holder; True when taken.

    Higher rank wins (e.g. the bridged agent over the offered one); within a rank the later
    event wins, or the earlier one with `earliest`; the event id breaks exact time ties so the
    outcome never depends on arrival order. The same event again never wins against itself.
    """
    new = [rank, fact.at_us, fact.event_id]
    held = record.facts.get(slot)
    if held is not None:
        if new == list(held):
            return False
        if rank != held[0]:
            if rank < held[0]:
                return False
        elif earliest and (fact.at_us, fact.event_id) > (held[1], held[2]):
            return False
        elif not earliest and (fact.at_us, fact.event_id) < (held[1], held[2]):
            return False
    record.facts[slot] = new
    return True


def _caller(record: CdrRecord, ani: str, dnis: str, rank: int, fact: _Fact) -> None:
    if ani and _claim(record, "caller", rank, fact):
        record.ani, record.dnis = ani, dnis


def _queue(record: CdrRecord, queue: str, rank: int, fact: _Fact) -> None:
    if queue and _claim(record, "queue", rank, fact):
        record.queue = queue


def _agent(record: CdrRecord, agent_id: str, rank: int, fact: _Fact) -> None:
    if agent_id and _claim(record, "agent", rank, fact):
        record.agent_id = agent_id


# -- one fold per event type ----------------------------------------------------------------


def _call_offered(record: CdrRecord, p: events_pb2.CallOffered, fact: _Fact) -> None:
    _caller(record, p.ani, p.dnis, 2, fact)
    if _claim(record, "offer", 1, fact, earliest=True):
        record.trunk, record.channel, record.offered_at = p.trunk, p.channel, fact.at


def _call_queued(record: CdrRecord, p: events_pb2.CallQueued, fact: _Fact) -> None:
    _caller(record, p.ani, p.dnis, 1, fact)
    _queue(record, p.queue, 2, fact)
    # Wait is measured from the first time the caller joined a queue.
    record.queued_at = _earliest(record.queued_at, fact.at)


def _agent_offered(record: CdrRecord, p: events_pb2.AgentOffered, fact: _Fact) -> None:
    _caller(record, p.ani, p.dnis, 1, fact)
    _queue(record, p.queue, 1, fact)
    _agent(record, p.agent_id, 1, fact)
    if p.agent_id and p.extension:
        seen = record.facts.setdefault("extensions", {})
        held = seen.get(p.agent_id)
        if held is None or (fact.at_us, fact.event_id) > (held[1], held[2]):
            seen[p.agent_id] = [p.extension, fact.at_us, fact.event_id]


def _call_bridged(record: CdrRecord, p: events_pb2.CallBridged, fact: _Fact) -> None:
    _queue(record, p.queue, 1, fact)
    _agent(record, p.agent_id, 2, fact)
    record.answered_at = _earliest(record.answered_at, fact.at)


def _call_ended(record: CdrRecord, p: events_pb2.CallEnded, fact: _Fact) -> None:
    if _claim(record, "end", 1, fact, earliest=True):
        record.ended_at = fact.at
        record.end_reason = end_reason_name(p.reason)
        record.facts["reported_talk_ms"] = p.talk_ms


def _call_abandoned(record: CdrRecord, p: events_pb2.CallAbandoned, fact: _Fact) -> None:
    _queue(record, p.queue, 1, fact)
    record.abandoned = True


def _recording_ready(record: CdrRecord, p: events_pb2.RecordingReady, fact: _Fact) -> None:
    _queue(record, p.queue, 0, fact)
    _agent(record, p.agent_id, 0, fact)
    if _claim(record, "recording", 1, fact):
        record.recording_id, record.recording_path = p.recording_id, p.path
        record.recording_status = p.status or "complete"


_FOLDS: dict[str, Callable[[CdrRecord, Any, _Fact], None]] = {
    "CallOffered": _call_offered,
    "CallQueued": _call_queued,
    "AgentOffered": _agent_offered,
    "CallBridged": _call_bridged,
    "CallEnded": _call_ended,
    "CallAbandoned": _call_abandoned,
    "RecordingReady": _recording_ready,
}
assert set(_FOLDS) == CDR_EVENTS


# -- derived columns ------------------------------------------------------------------------


def _derive(record: CdrRecord) -> None:
    """Recompute what depends on several facts, whichever arrived last."""
    held = record.facts.get("extensions", {}).get(record.agent_id)
    record.extension = held[0] if held else ""
    waited_until = record.answered_at or record.ended_at
    record.wait_ms = (
        _ms(waited_until - record.queued_at) if record.queued_at and waited_until else None
    )
    if record.answered_at and record.ended_at:
        record.talk_ms = _ms(record.ended_at - record.answered_at)
    elif record.ended_at:
        # Bridge not seen (yet): trust the gateway's own count, 0 when never bridged.
        record.talk_ms = int(record.facts.get("reported_talk_ms", 0))
    else:
        record.talk_ms = None


def _ms(delta: timedelta) -> int:
    return max(0, round(delta.total_seconds() * 1000))


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
