"""The wrap-up form of a call, checked: a disposition code, notes, and an optional follow-up
that becomes a callback task. Pure logic; the REST handler stores what this returns.

A follow-up must say when (a time with its zone, in the future, within `MAX_FOLLOW_UP`) and
whom to call: the number given, else the caller's, which must be dialable.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crm.phone import normalise

MAX_NOTES = 2000
MAX_FOLLOW_UP = timedelta(days=90)
#: a due time this far in the past is a clock skew between browser and server, not a mistake.
PAST_TOLERANCE = timedelta(minutes=1)


class DispositionError(ValueError):
    """The form is not acceptable; the message names the field and what is wrong with it."""


@dataclass(frozen=True)
class FollowUp:
    due_at: datetime
    phone: str
    notes: str


@dataclass(frozen=True)
class Disposition:
    code: str
    notes: str
    follow_up: FollowUp | None


def _text(body: dict[str, Any], name: str, max_len: int) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DispositionError(f"field {name} must be a string")
    if len(value) > max_len:
        raise DispositionError(f"field {name} is longer than {max_len} characters")
    return value.strip()


def _due(raw: Any, now: datetime) -> datetime:
    if not isinstance(raw, str) or not raw:
        raise DispositionError(
            "field follow_up.due_at must be an ISO-8601 time, e.g. 2026-12-01T09:30:00+08:00"
        )
    try:
        due = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise DispositionError(f"field follow_up.due_at is not an ISO-8601 time: {raw!r}") from None
    if due.tzinfo is None:
        raise DispositionError("field follow_up.due_at must carry a time zone (Z or +08:00)")
    if due < now - PAST_TOLERANCE:
        raise DispositionError("field follow_up.due_at is in the past")
    if due > now + MAX_FOLLOW_UP:
        raise DispositionError(
            f"field follow_up.due_at is more than {MAX_FOLLOW_UP.days} days ahead"
        )
    return due


def check(body: dict[str, Any], codes: Collection[str], caller: str, now: datetime) -> Disposition:
    """The disposition in `body`, or DispositionError; `codes` are the active codes, `caller`
    the number a follow-up calls back when the form gives none."""
    code = body.get("code")
    if not isinstance(code, str) or not code:
        raise DispositionError("missing field: code")
    if code not in codes:
        raise DispositionError(f"field code must be one of: {', '.join(sorted(codes))}")
    notes = _text(body, "notes", MAX_NOTES)
    raw = body.get("follow_up")
    if raw is None or raw is False:
        return Disposition(code, notes, None)
    if not isinstance(raw, dict):
        raise DispositionError("field follow_up must be an object {due_at, phone?, notes?} or null")
    due = _due(raw.get("due_at"), now)
    phone = normalise(_text(raw, "phone", 32)) or normalise(caller)
    if not phone:
        raise DispositionError(
            "field follow_up.phone is needed: the caller's number is not dialable"
        )
    return Disposition(code, notes, FollowUp(due, phone, _text(raw, "notes", MAX_NOTES)))
