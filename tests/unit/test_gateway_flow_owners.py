"""FlowOwners: a call left in the menu of an IVR that has gone silent is handed to one live
IVR, and only such a call (not a queued, ringing or bridged one, not a live IVR's)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.calls import CallState
from gateway.core.flow_owners import FORGET_AFTER, FlowOwners


@dataclass
class FakeCall:
    """The fields adoption reads (gateway.core.calls.Call has them all)."""

    call_id: str
    flow_owner: str
    state: CallState = CallState.ANSWERED
    agent: object | None = None


def adopt(owners: FlowOwners, calls: list[FakeCall], instance: str, now: float) -> list[str]:
    return [c.call_id for c in owners.adopt(calls, instance, now)]  # type: ignore[arg-type]


def test_a_call_of_a_silent_ivr_goes_to_the_first_live_one_that_asks() -> None:
    owners = FlowOwners(timeout_s=20, now=0)
    owners.seen("ivr-a", 0)
    calls = [FakeCall("c1", "ivr-a")]
    assert adopt(owners, calls, "ivr-b", 20) == []  # silent 20 s: not yet lost
    assert adopt(owners, calls, "ivr-b", 20.5) == ["c1"]
    assert calls[0].flow_owner == "ivr-b"
    assert adopt(owners, calls, "ivr-c", 21) == []  # one owner: ivr-b asked just now


def test_a_live_ivr_keeps_its_calls() -> None:
    owners = FlowOwners(timeout_s=20, now=0)
    calls = [FakeCall("c1", "ivr-a")]
    for t in range(0, 100, 5):
        owners.seen("ivr-a", t)  # its heartbeat
        assert adopt(owners, calls, "ivr-b", t + 1) == []
    assert calls[0].flow_owner == "ivr-a"


def test_an_owner_never_heard_of_counts_from_the_gateways_start() -> None:
    # the gateway restarted: it has heard of nobody yet, and gives every IVR its timeout
    owners = FlowOwners(timeout_s=20, now=100)
    calls = [FakeCall("c1", "ivr-a")]
    assert adopt(owners, calls, "ivr-b", 110) == []
    assert adopt(owners, calls, "ivr-b", 121) == ["c1"]


def test_only_calls_still_in_a_menu_are_adopted() -> None:
    owners = FlowOwners(timeout_s=20, now=0)
    calls = [
        FakeCall("queued", ""),  # the ACD commanded it: the flow is over
        FakeCall("ringing", "ivr-a", CallState.OFFERED),
        FakeCall("bridged", "ivr-a", CallState.BRIDGED, agent=object()),
        FakeCall("agent-leg", "ivr-a", agent=object()),
        FakeCall("own", "ivr-b"),  # its own: taken up at its start, not here
        FakeCall("menu", "ivr-a"),
    ]
    assert adopt(owners, calls, "ivr-b", 30) == ["menu"]


def test_instances_silent_long_ago_are_forgotten() -> None:
    owners = FlowOwners(timeout_s=20, now=0)
    owners.seen("ivr-old", 0)
    adopt(owners, [], "ivr-b", FORGET_AFTER * 20 + 1)
    assert "ivr-old" not in owners._seen and "ivr-b" in owners._seen
