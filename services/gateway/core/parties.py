"""Who is in a call and who hears whom: the pure policy behind hold, consult, conference,
supervisor monitoring and mute.

A call's parties are its caller, its agent and any others (conference parties, a consult
target, a supervisor). Each tick of the call's room follows :func:`hearing`:

* a held party hears hold music and is heard by nobody;
* the talkers (everyone not held, not a listening or whispering supervisor) hear each other;
* a supervisor in LISTEN hears the talkers and is heard by nobody; in WHISPER the agent hears
  him too; in BARGE he is a talker;
* a muted party is heard by nobody but still hears.

A consult is this policy too: the caller held while the agent talks to the consult target, or
(after a swap) the target held while the agent talks to the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.core.contracts import Leg

__all__ = ["MOH", "MonitorMode", "Party", "Role", "hearing", "is_plain"]

MOH = "moh"  # the room key of the call's hold music


class Role(str, enum.Enum):
    CALLER = "caller"
    AGENT = "agent"
    PARTY = "party"  # added to a conference
    CONSULT = "consult"  # the target of a consult call
    SUPERVISOR = "supervisor"


class MonitorMode(str, enum.Enum):
    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"


@dataclass(eq=False)
class Party:
    """One leg of a call and what it is there for."""

    leg: Leg
    role: Role
    endpoint: str = ""  # the extension or number it was reached at
    agent_id: str = ""  # the agent or supervisor behind it, when known
    mode: MonitorMode | None = None  # supervisors only

    @property
    def key(self) -> str:
        return self.leg.leg_id

    @property
    def talks(self) -> bool:
        """In the conversation (not a silent or whispering supervisor)."""
        return self.role is not Role.SUPERVISOR or self.mode is MonitorMode.BARGE


def hearing(
    parties: Sequence[Party], held: Iterable[str] = (), muted: Iterable[str] = ()
) -> dict[str, set[str]]:
    """For each party's key, the keys it hears (``MOH`` for the held)."""
    held_, muted_ = set(held), set(muted)
    talkers = [p.key for p in parties if p.talks and p.key not in held_]
    audible = [k for k in talkers if k not in muted_]
    whisperers = [
        p.key
        for p in parties
        if p.mode is MonitorMode.WHISPER and p.key not in held_ and p.key not in muted_
    ]
    out: dict[str, set[str]] = {}
    for party in parties:
        if party.key in held_:
            out[party.key] = {MOH}
        elif not party.talks:
            out[party.key] = set(audible)
        else:
            heard = {k for k in audible if k != party.key}
            if party.role is Role.AGENT:
                heard.update(whisperers)
            out[party.key] = heard
    return out


def is_plain(parties: Sequence[Party], held: Iterable[str] = (), muted: Iterable[str] = ()) -> bool:
    """Caller and agent talking, nothing else: the two-party bridge does it."""
    roles = sorted(p.role.value for p in parties)
    return roles == ["agent", "caller"] and not set(held) and not set(muted)
