"""Folding a call's events into its call detail record — pure logic, no I/O.

A call's events travel on different topics (`calls`, `queues`, `agents`, `recordings`), so
they reach the CRM in any order and, after a consumer restart, more than once. Folding must
therefore be order-independent and idempotent: every order-sensitive field is *claimed* by
the event that set it, recorded in `facts` as (rank, occurred_at, event_id), and a later
event only takes the field over when it outranks that claim. Times come from the envelope's
`occurred_at` (when it happened), never from when we happened to read it.
"""

from __future__ import annotations

import marshal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from common.events import Envelope, payload_of
from crm.phone import normalise
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
        "CallHeld",
        "CallResumed",
        "CallTransferred",
        "ConferenceJoined",
        "ConferenceLeft",
        "AgentStateChanged",
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
    "caller_number",
    "hold_ms",
    "hold_count",
    "acw_started_at",
    "acw_ended_at",
    "acw_ms",
    "handle_ms",
    "transfers",
    "conference",
    "recordings",
    "facts",
)
#: columns holding JSON documents (copied deeply between record and row).
_JSON_COLUMNS = frozenset({"transfers", "conference", "recordings", "facts"})
#: every column but `facts`
_PLAIN_COLUMNS = tuple(name for name in COLUMNS if name != "facts")


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
    #: the caller's number in normal form (crm.phone), how contact history finds the call
    caller_number: str = ""
    hold_ms: int = 0
    hold_count: int = 0
    #: after-call work: from the agent's wrap-up for this call to leaving it
    acw_started_at: datetime | None = None
    acw_ended_at: datetime | None = None
    acw_ms: int | None = None
    #: talk + hold + after-call work, once the call was answered
    handle_ms: int | None = None
    transfers: list[dict[str, Any]] = field(default_factory=list)
    conference: list[dict[str, Any]] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    #: claims and raw facts behind the derived columns; JSON-serialisable.
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any, *, copy: bool = True) -> CdrRecord:
        """Load from anything with the CDR columns as attributes (the ORM row). `copy=False`
        for a row nobody else holds (a Core result row): its JSON documents are taken over."""
        values = {name: getattr(row, name) for name in COLUMNS}
        for name in _JSON_COLUMNS:
            value = values[name] or ({} if name == "facts" else [])
            values[name] = _deep_copy(value) if copy else value
        for name in ("hold_ms", "hold_count"):
            values[name] = values[name] or 0
        return cls(call_id=row.call_id, **values)

    def to_row(self, row: Any) -> None:
        """Write the columns back onto an ORM row (a fresh `facts` so the change is seen)."""
        for name in COLUMNS:
            value = getattr(self, name)
            setattr(row, name, _deep_copy(value) if name in _JSON_COLUMNS else value)

    def values(self) -> dict[str, Any]:
        """The row's columns as statement parameters (not copied: written at once)."""
        values = {name: getattr(self, name) for name in COLUMNS}
        values["call_id"] = self.call_id
        return values


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
    """The call an envelope is about, or None when it does not belong in a CDR.

    Of the agents' events only the start of a call's wrap-up belongs: it starts its ACW.
    """
    kind = _kind(env)
    if kind not in CDR_EVENTS:
        return None
    payload: Any = payload_of(env)
    if kind == "AgentStateChanged" and payload.state != events_pb2.AGENT_STATE_WRAP_UP:
        return None
    call_id: str = getattr(payload, "call_id", "")
    return call_id or None


def leaves_wrap_up(env: Envelope) -> bool:
    """Whether the envelope is an agent leaving wrap-up (that ends the ACW of their last call;
    the event names no call, the CDR store finds it)."""
    if _kind(env) != "AgentStateChanged":
        return False
    p = env.agent_state_changed
    return p.previous == events_pb2.AGENT_STATE_WRAP_UP and p.state != p.previous


def end_acw(record: CdrRecord, at: datetime) -> bool:
    """Close the call's after-call work at `at` (the first close wins); True when changed."""
    if record.acw_started_at is None or record.acw_ended_at is not None:
        return False
    if at < record.acw_started_at:
        return False
    record.acw_ended_at = at
    _derive(record)
    return True


def end_reason_name(reason: events_pb2.EndReason.ValueType) -> str:
    """`END_REASON_CALLER_HANGUP` -> "caller_hangup"."""
    return events_pb2.EndReason.Name(reason).removeprefix("END_REASON_").lower()


def fold(record: CdrRecord, env: Envelope) -> bool:
    """Fold one envelope into `record`; True when any column changed.

    Folding the same envelope again, or a set of envelopes in any order, gives the same record.
    """
    if call_id_of(env) != record.call_id:
        return False
    before = _snapshot(record)
    at = env.occurred_at.ToDatetime(tzinfo=UTC)
    fact = _Fact(
        at, env.occurred_at.seconds * 1_000_000 + env.occurred_at.nanos // 1000, env.event_id
    )
    record.started_at = _earliest(record.started_at, at)
    payload = payload_of(env)
    _FOLDS[payload.DESCRIPTOR.name](record, payload, fact)
    _derive(record)
    return _snapshot(record) != before


def _snapshot(record: CdrRecord) -> tuple[Any, ...]:
    """The record's columns as they stand: what `fold` compares to tell a change. Folding
    changes only `facts` in place, so only it is copied; `_derive` replaces the other JSON
    columns whole, never changes them in place, so the old ones are kept as they are.
    (`dataclasses.asdict` deep-copied all of them twice per event, most of a batch's CPU.)"""
    return (*[getattr(record, name) for name in _PLAIN_COLUMNS], _deep_copy(record.facts))


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
        # The gateway's own count includes a hold still open at hangup: it wins.
        record.facts["reported_hold"] = [p.hold_ms, p.hold_count]


def _call_abandoned(record: CdrRecord, p: events_pb2.CallAbandoned, fact: _Fact) -> None:
    _queue(record, p.queue, 1, fact)
    record.abandoned = True


def _recording_ready(record: CdrRecord, p: events_pb2.RecordingReady, fact: _Fact) -> None:
    _queue(record, p.queue, 0, fact)
    _agent(record, p.agent_id, 0, fact)
    if _claim(record, "recording", 1, fact):
        record.recording_id, record.recording_path = p.recording_id, p.path
        record.recording_status = p.status or "complete"
    if p.recording_id:
        record.facts.setdefault("recordings", {})[p.recording_id] = {
            "recording_id": p.recording_id,
            "path": p.path,
            "status": p.status or "complete",
            "duration_ms": p.duration_ms,
            # where the call was on hold within this recording (ms from its start)
            "holds": [
                {"start_ms": h.start_ms, "end_ms": h.end_ms, "held_by": h.held_by} for h in p.holds
            ],
            "at": _iso(fact.at),
            "at_us": fact.at_us,
        }


def _call_held(record: CdrRecord, p: events_pb2.CallHeld, fact: _Fact) -> None:
    record.facts.setdefault("held", {})[fact.event_id] = fact.at_us


def _call_resumed(record: CdrRecord, p: events_pb2.CallResumed, fact: _Fact) -> None:
    record.facts.setdefault("resumed", {})[fact.event_id] = max(0, p.held_ms)


def _call_transferred(record: CdrRecord, p: events_pb2.CallTransferred, fact: _Fact) -> None:
    # The agent who has the call after the transfer is the one the record credits.
    _agent(record, p.to_agent_id, 2, fact)
    record.facts.setdefault("transfers", {})[fact.event_id] = {
        "at": _iso(fact.at),
        "at_us": fact.at_us,
        "kind": p.kind,
        "target_kind": p.target_kind,
        "target": p.target,
        "from_agent_id": p.from_agent_id,
        "to_agent_id": p.to_agent_id,
    }


def _conference_joined(record: CdrRecord, p: events_pb2.ConferenceJoined, fact: _Fact) -> None:
    party = record.facts.setdefault("conference", {}).setdefault(p.leg_id, {})
    party.update(party=p.party, joined_at=_iso(fact.at), joined_us=fact.at_us)


def _conference_left(record: CdrRecord, p: events_pb2.ConferenceLeft, fact: _Fact) -> None:
    party = record.facts.setdefault("conference", {}).setdefault(p.leg_id, {})
    party.setdefault("party", p.party)
    party["left_at"] = _iso(fact.at)


def _agent_state(record: CdrRecord, p: events_pb2.AgentStateChanged, fact: _Fact) -> None:
    # Only the entry into wrap-up reaches here (see call_id_of).
    if _claim(record, "acw", 1, fact, earliest=True):
        record.acw_started_at = fact.at


_FOLDS: dict[str, Callable[[CdrRecord, Any, _Fact], None]] = {
    "CallOffered": _call_offered,
    "CallQueued": _call_queued,
    "AgentOffered": _agent_offered,
    "CallBridged": _call_bridged,
    "CallEnded": _call_ended,
    "CallAbandoned": _call_abandoned,
    "RecordingReady": _recording_ready,
    "CallHeld": _call_held,
    "CallResumed": _call_resumed,
    "CallTransferred": _call_transferred,
    "ConferenceJoined": _conference_joined,
    "ConferenceLeft": _conference_left,
    "AgentStateChanged": _agent_state,
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
    # The gateway's count at the end includes a hold still open at hang-up; the events seen
    # count the rest (and a gateway that reports no count, 0, is not believed over them).
    reported_ms, reported_count = record.facts.get("reported_hold", (0, 0))
    record.hold_ms = max(int(reported_ms), sum(record.facts.get("resumed", {}).values()))
    record.hold_count = max(int(reported_count), len(record.facts.get("held", {})))
    # Talk is the time connected and not on hold.
    if record.answered_at and record.ended_at:
        record.talk_ms = max(0, _ms(record.ended_at - record.answered_at) - record.hold_ms)
    elif record.ended_at:
        # Bridge not seen (yet): trust the gateway's own count, 0 when never bridged.
        reported = int(record.facts.get("reported_talk_ms", 0))
        record.talk_ms = max(0, reported - record.hold_ms) if reported else 0
    else:
        record.talk_ms = None
    if record.acw_started_at and record.acw_ended_at:
        record.acw_ms = _ms(record.acw_ended_at - record.acw_started_at)
    else:
        record.acw_ms = None
    answered = record.answered_at is not None or bool(record.talk_ms)
    if answered and record.talk_ms is not None:
        record.handle_ms = record.talk_ms + record.hold_ms + (record.acw_ms or 0)
    else:
        record.handle_ms = None
    record.caller_number = normalise(record.ani)
    record.transfers = [
        {k: v for k, v in t.items() if k != "at_us"}
        for t in sorted(record.facts.get("transfers", {}).values(), key=lambda t: t["at_us"])
    ]
    record.recordings = [
        {k: v for k, v in r.items() if k != "at_us"}
        for r in sorted(
            record.facts.get("recordings", {}).values(),
            key=lambda r: (r["at_us"], r["recording_id"]),
        )
    ]
    record.conference = [
        {"leg_id": leg, **{k: v for k, v in party.items() if k != "joined_us"}}
        for leg, party in sorted(
            record.facts.get("conference", {}).items(),
            key=lambda item: (item[1].get("joined_us", 0), item[0]),
        )
    ]


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(delta: timedelta) -> int:
    return max(0, round(delta.total_seconds() * 1000))


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def _deep_copy(value: Any) -> Any:
    """A copy of a JSON document (dicts, lists, str, numbers, bool, None) sharing nothing
    mutable with it: a marshal round trip, the same copy in C at half the cost."""
    return marshal.loads(marshal.dumps(value))
