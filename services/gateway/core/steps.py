"""The call-control facts the switch announces (each becomes one event on the `calls` topic):
a hold and its resume, a transfer, a consult, a conference join or leave, a supervisor's
monitor. Plain data; the notifier turns each into its protobuf."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConferenceJoined",
    "ConferenceLeft",
    "ConsultEnded",
    "ConsultStarted",
    "Held",
    "MonitorStarted",
    "MonitorStopped",
    "Resumed",
    "Step",
    "Transferred",
]


@dataclass(frozen=True, slots=True)
class Held:
    leg_id: str  # the leg that holds
    agent_id: str
    by: str  # "desk" | "phone"


@dataclass(frozen=True, slots=True)
class Resumed:
    leg_id: str
    agent_id: str
    held_ms: int


@dataclass(frozen=True, slots=True)
class Transferred:
    from_leg_id: str
    from_agent_id: str
    kind: str  # "blind" | "attended"
    target_kind: str  # "extension" | "queue" | "number"
    target: str
    to_leg_id: str = ""
    to_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class ConsultStarted:
    consult_leg_id: str
    agent_id: str
    target_kind: str
    target: str


@dataclass(frozen=True, slots=True)
class ConsultEnded:
    consult_leg_id: str
    agent_id: str
    outcome: str  # "completed" | "cancelled" | "failed"


@dataclass(frozen=True, slots=True)
class ConferenceJoined:
    leg_id: str
    party: str
    agent_id: str
    parties: int


@dataclass(frozen=True, slots=True)
class ConferenceLeft:
    leg_id: str
    party: str
    parties: int


@dataclass(frozen=True, slots=True)
class MonitorStarted:
    leg_id: str
    supervisor_id: str
    mode: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class MonitorStopped:
    leg_id: str
    supervisor_id: str


Step = (
    Held
    | Resumed
    | Transferred
    | ConsultStarted
    | ConsultEnded
    | ConferenceJoined
    | ConferenceLeft
    | MonitorStarted
    | MonitorStopped
)
