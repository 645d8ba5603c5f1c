"""Call control on the switch with fake channels: hold/resume (desk and phone) with hold
music and hold time, blind transfer (extension, number, queue) and its failure, consult
(complete, cancel, swap), conference join/leave and collapse, monitor modes, mute, digits,
and the errors for wrong states."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core import steps
from gateway.core.calls import CallState, EndReason
from gateway.core.contracts import Attempt, Outcome
from gateway.core.control import TargetKind
from gateway.core.parties import MonitorMode
from gateway.core.switch import CommandError
from tests.unit.gateway_rig import FakeLeg, Rig, make_rig, settle, tone


class FakeAcd:
    def __init__(self, problem: str = "") -> None:
        self.problem = problem
        self.requeued: list[tuple[str, str, str]] = []

    async def requeue(self, call_id: str, queue: str, from_agent_id: str) -> str:
        self.requeued.append((call_id, queue, from_agent_id))
        return self.problem


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path)
    yield made
    await made.switch.stop()


def heard(leg: FakeLeg) -> int:
    return int(leg.media.sent[-1][0])


async def test_desk_hold_plays_music_to_the_caller_tells_the_phone_and_counts(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    await rig.switch.control.hold(call.call_id)
    assert ("hold", agent) in rig.channel.actions
    caller.media.hear(tone(11))
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert heard(caller) == 500  # the hold prompt's level
    assert agent.media.skipped >= 1 and all(int(f[0]) != 11 for f in agent.media.sent)
    await rig.switch.control.hold(call.call_id)  # a no-op
    await asyncio.sleep(0.02)
    await rig.switch.control.resume(call.call_id)
    assert ("unhold", agent) in rig.channel.actions
    caller.media.hear(tone(11))
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert (heard(caller), heard(agent)) == (22, 11)
    assert call.bridge is not None and call.room is None  # collapsed to the two-party bridge
    kinds = [type(s) for s in rig.events.steps]
    assert kinds == [steps.Held, steps.Resumed]
    resumed = rig.events.steps[1]
    assert isinstance(resumed, steps.Resumed) and resumed.held_ms >= 20
    rig.switch.hangup(call.call_id, "done")
    assert call.hold_count == 1 and call.hold_ms >= 20
    rec = rig.recorder.started[0]
    assert (11, 500) in [(int(a[0]), int(b[0])) for a, b in rec.frames]  # music recorded
    # the recording is told where the hold began (by whom) and ended, once each
    assert rec.marks == [("held", agent.leg_id, "agent"), ("resumed", "", "")]


async def test_a_phone_that_holds_by_itself_gives_the_other_party_music(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.switch.leg_held(agent, True)
    caller.media.hear(tone(11))
    rig.clock.tick()
    assert heard(caller) == 500
    held = rig.events.steps[0]
    assert isinstance(held, steps.Held) and held.by == "phone" and held.leg_id == agent.leg_id
    rig.switch.leg_held(agent, False)
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert heard(caller) == 22 and call.hold_count == 1
    assert rig.recorder.started[0].marks == [
        ("held", agent.leg_id, "agent"),
        ("resumed", "", ""),
    ]


async def test_a_hold_still_on_at_hangup_is_ended_in_the_recording(rig: Rig) -> None:
    _caller, agent, call = await rig.bridged_call()
    await rig.switch.control.hold(call.call_id)
    rig.switch.hangup(call.call_id, "done")
    assert rig.recorder.started[0].marks == [("held", agent.leg_id, "agent"), ("resumed", "", "")]


async def test_hold_needs_a_bridged_call_and_unknown_calls_are_gone(rig: Rig) -> None:
    _, call = await rig.answered_call()
    with pytest.raises(CommandError, match="bridged"):
        await rig.switch.control.hold(call.call_id)
    from gateway.core.calls import CallGone

    with pytest.raises(CallGone):
        await rig.switch.control.hold("nope")


async def test_blind_transfer_to_an_extension_hands_the_caller_over(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    target = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, target)
    attempt = await rig.switch.control.transfer(call.call_id, TargetKind.EXTENSION, "8002", "a1", 5)
    assert attempt.outcome is Outcome.ANSWERED
    await settle()
    assert ("hang_up", agent) in rig.channel.actions
    assert call.agent is target and call.state is CallState.BRIDGED and not call.held
    caller.media.hear(tone(11))
    target.media.hear(tone(33))
    rig.clock.tick()
    assert (heard(caller), heard(target)) == (33, 11)
    moved = [s for s in rig.events.steps if isinstance(s, steps.Transferred)]
    assert moved[0].target == "8002" and moved[0].kind == "blind"
    assert moved[0].from_leg_id == agent.leg_id and moved[0].to_leg_id == target.leg_id
    rig.channel.far_end_hangs_up(agent)  # the old agent's late BYE does not end the call
    assert call.state is CallState.BRIDGED


async def test_a_failed_transfer_gives_the_caller_back_to_the_agent(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.BUSY, None, "486")
    attempt = await rig.switch.control.transfer(call.call_id, TargetKind.EXTENSION, "8002", "", 5)
    assert attempt.outcome is Outcome.BUSY
    assert call.agent is agent and not call.held
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert heard(caller) == 22


async def test_transfer_to_a_number_uses_the_trunk_without_a_new_call(rig: Rig) -> None:
    _, agent, call = await rig.bridged_call()
    attempt = await rig.switch.control.transfer(
        call.call_id, TargetKind.NUMBER, "013900001111", "", 5
    )
    assert attempt.outcome is Outcome.ANSWERED and rig.channel.placed == ["013900001111"]
    assert len(rig.switch.list_calls()) == 1 and call.agent is attempt.leg


async def test_transfer_to_a_queue_requeues_and_releases_the_agent(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    acd = FakeAcd()
    rig.switch.acd = acd
    attempt = await rig.switch.control.transfer(call.call_id, TargetKind.QUEUE, "billing", "", 5)
    await settle()
    assert attempt.outcome is Outcome.ANSWERED
    assert acd.requeued == [(call.call_id, "billing", "agent1")]
    assert call.state is CallState.ANSWERED and call.agent is None
    assert ("hang_up", agent) in rig.channel.actions
    rig.clock.tick()
    assert heard(caller) == 500  # music until the ACD plays its own
    # the ACD can connect it again
    again = await rig.switch.connect(call.call_id, "8003", 4.0, "agent3", "billing")
    assert again.outcome is Outcome.ANSWERED and call.state is CallState.BRIDGED


async def test_a_refused_requeue_keeps_the_agent(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.switch.acd = FakeAcd("no such queue")
    attempt = await rig.switch.control.transfer(call.call_id, TargetKind.QUEUE, "nope", "", 5)
    assert attempt.outcome is Outcome.REJECTED and "no such queue" in attempt.detail
    assert call.agent is agent and call.state is CallState.BRIDGED
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert heard(caller) == 22


async def test_consult_then_swap_then_complete(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    target = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, target)
    await rig.switch.control.consult(call.call_id, TargetKind.EXTENSION, "8002", "a1", 5)
    caller.media.hear(tone(11))
    agent.media.hear(tone(22))
    target.media.hear(tone(33))
    rig.clock.tick()
    assert (heard(caller), heard(agent), heard(target)) == (500, 33, 22)
    rig.switch.control.end_consult(call.call_id, "swap")
    caller.media.hear(tone(11))
    agent.media.hear(tone(22))
    target.media.hear(tone(33))
    rig.clock.tick()
    assert (heard(caller), heard(agent), heard(target)) == (22, 11, 500)
    rig.switch.control.end_consult(call.call_id, "complete")
    await settle()
    assert call.agent is target and ("hang_up", agent) in rig.channel.actions
    caller.media.hear(tone(11))
    target.media.hear(tone(33))
    rig.clock.tick()
    assert (heard(caller), heard(target)) == (33, 11)
    names = [type(s).__name__ for s in rig.events.steps]
    assert "ConsultStarted" in names and "ConsultEnded" in names and "Transferred" in names


async def test_consult_cancel_drops_the_target_and_resumes(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    target = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, target)
    await rig.switch.control.consult(call.call_id, TargetKind.EXTENSION, "8002", "a1", 5)
    rig.switch.control.end_consult(call.call_id, "cancel")
    await settle()
    assert ("hang_up", target) in rig.channel.actions and not call.held
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert heard(caller) == 22
    with pytest.raises(CommandError, match="no consult"):
        rig.switch.control.end_consult(call.call_id, "complete")


async def test_conference_grows_each_hears_the_others_and_collapses(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    legs = []
    for n in range(3):
        leg = FakeLeg(rig.channel, inbound=False, answered=True)
        legs.append(leg)
        rig.channel.ring_outcome = lambda abandon, leg=leg: Attempt(Outcome.ANSWERED, leg)
        attempt = await rig.switch.control.add_party(
            call.call_id, TargetKind.EXTENSION, f"800{n + 2}", "a1", 5
        )
        assert attempt.outcome is Outcome.ANSWERED
        assert rig.switch.control.parties_in(call.call_id) == n + 3
    everyone = [caller, agent, *legs]
    for i, leg in enumerate(everyone):
        leg.media.hear(tone(10**i))
    rig.clock.tick()
    total = sum(10**i for i in range(5))
    assert [heard(leg) for leg in everyone] == [total - 10**i for i in range(5)]
    for leg in legs[:2]:
        rig.switch.control.remove_party(call.call_id, leg.leg_id)
    rig.channel.far_end_hangs_up(legs[2])
    await settle()
    assert call.state is CallState.BRIDGED and call.room is None and call.bridge is not None
    left = [s for s in rig.events.steps if isinstance(s, steps.ConferenceLeft)]
    assert [s.parties for s in left] == [4, 3, 2]


async def test_the_agent_leaving_a_conference_leaves_the_others_talking(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    party = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, party)
    await rig.switch.control.add_party(call.call_id, TargetKind.EXTENSION, "8002", "a1", 5)
    rig.channel.far_end_hangs_up(agent)
    assert call.state is CallState.BRIDGED and call.agent is party
    party.media.hear(tone(33))
    rig.clock.tick()
    assert heard(caller) == 33
    rig.channel.far_end_hangs_up(party)
    assert call.state is CallState.ENDED
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.AGENT_HANGUP


async def test_monitor_listen_whisper_barge_and_stop(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    sup = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, sup)

    def talk() -> tuple[int, int, int]:
        caller.media.hear(tone(11))
        agent.media.hear(tone(22))
        sup.media.hear(tone(400))
        rig.clock.tick()
        return heard(caller), heard(agent), heard(sup)

    _, leg_id = await rig.switch.control.monitor(call.call_id, MonitorMode.LISTEN, "s1", "8009", 5)
    assert leg_id == sup.leg_id
    assert talk() == (22, 11, 33)
    await rig.switch.control.monitor(call.call_id, MonitorMode.WHISPER, "s1", "", 5)
    assert talk() == (22, 411, 33)
    await rig.switch.control.monitor(call.call_id, MonitorMode.BARGE, "s1", "", 5)
    assert talk() == (422, 411, 33)
    with pytest.raises(CommandError, match="monitored by s1"):
        await rig.switch.control.monitor(call.call_id, MonitorMode.LISTEN, "s2", "8010", 5)
    rig.switch.control.stop_monitor(call.call_id, "")
    await settle()
    assert ("hang_up", sup) in rig.channel.actions and call.room is None
    modes = [s.mode for s in rig.events.steps if isinstance(s, steps.MonitorStarted)]
    assert modes == ["listen", "whisper", "barge"]


async def test_mute_silences_the_agent_for_the_others_and_digits_go_to_the_far_party(
    rig: Rig,
) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.switch.control.mute(call.call_id, "", True)
    caller.media.hear(tone(11))
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert heard(agent) == 11
    assert all(int(f[0]) != 22 for f in caller.media.sent)
    rig.switch.control.mute(call.call_id, "", False)
    agent.media.hear(tone(22))
    rig.clock.tick()
    assert heard(caller) == 22
    await rig.switch.control.send_digits(call.call_id, "12#", "")
    assert caller.media.digits_sent == "12#" and agent.media.digits_sent == ""


async def test_hangup_ends_a_conference_on_hold_and_releases_every_leg(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    party = FakeLeg(rig.channel, inbound=False, answered=True)
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.ANSWERED, party)
    await rig.switch.control.add_party(call.call_id, TargetKind.EXTENSION, "8002", "a1", 5)
    rig.switch.leg_held(party, True)
    rig.switch.hangup(call.call_id, "forced by supervisor s1")
    await asyncio.sleep(0.05)
    assert {leg for a, leg in rig.channel.actions if a == "hang_up"} >= {agent, party}
    assert rig.events.of("ended", call.call_id)["detail"] == "forced by supervisor s1"
    assert call.hold_count == 1


async def test_removing_the_agent_of_a_two_party_call_ends_it(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.switch.control.remove_party(call.call_id, agent.leg_id)
    await settle()
    assert call.state is CallState.ENDED and ("hang_up", agent) in rig.channel.actions
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.SYSTEM


async def test_force_release_while_a_transfer_rings_ends_everything(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()

    async def ring_until_abandoned(abandon: asyncio.Event) -> Attempt:
        await abandon.wait()
        return Attempt(Outcome.CALLER_GONE, None, "caller hung up while ringing")

    rig.channel.ring_outcome = ring_until_abandoned
    transfer = asyncio.ensure_future(
        rig.switch.control.transfer(call.call_id, TargetKind.EXTENSION, "8002", "a1", 30)
    )
    await settle()
    assert call.busy and call.held  # ringing, the caller on music
    rig.switch.hangup(call.call_id, "forced release by supervisor s1")
    attempt = await asyncio.wait_for(transfer, 2)
    assert attempt.outcome is Outcome.CALLER_GONE
    ended = rig.events.of("ended", call.call_id)
    assert ended["reason"] is EndReason.SYSTEM
    assert ended["detail"] == "forced release by supervisor s1"
    assert ("hang_up", agent) in rig.channel.actions and call.hold_count == 1


async def test_refer_with_replaces_moves_the_far_party_of_the_phones_other_call(
    rig: Rig,
) -> None:
    """The agent's phone has call A (a customer) and call B, where the gateway rang it for
    another caller; REFER with Replaces naming its leg in B joins B's caller to A's customer."""
    customer, phone_a, call_a = await rig.bridged_call()
    colleague, phone_b, call_b = await rig.bridged_call()
    attempt = await rig.switch.refer(phone_a, "extension", "8002", phone_b.leg_id)
    await settle()
    assert attempt.outcome is Outcome.ANSWERED and attempt.leg is colleague
    assert call_a.agent is colleague and call_b.state is CallState.ENDED
    assert ("hang_up", phone_b) in rig.channel.actions
    assert ("hang_up", colleague) not in rig.channel.actions
    customer.media.hear(tone(11))
    colleague.media.hear(tone(44))
    rig.clock.tick()
    assert (heard(customer), heard(colleague)) == (44, 11)
    moved = [s for s in rig.events.steps if isinstance(s, steps.Transferred)]
    assert [(m.kind, m.from_leg_id) for m in moved] == [("attended", phone_a.leg_id)]
    rig.channel.far_end_hangs_up(phone_a)  # the transferor's BYE does not end call A
    assert call_a.state is CallState.BRIDGED


async def test_an_agent_hanging_up_while_the_transfer_rings_leaves_the_caller_to_the_target(
    rig: Rig,
) -> None:
    caller, agent, call = await rig.bridged_call()
    answer = asyncio.Event()
    target = FakeLeg(rig.channel, inbound=False, answered=True)

    async def ring(abandon: asyncio.Event) -> Attempt:
        await answer.wait()
        return Attempt(Outcome.ANSWERED, target)

    rig.channel.ring_outcome = ring
    transfer = asyncio.ensure_future(
        rig.switch.control.transfer(call.call_id, TargetKind.EXTENSION, "8002", "a1", 30)
    )
    await settle()
    rig.channel.far_end_hangs_up(agent)  # a desk phone put down after "transfer"
    assert call.state is CallState.BRIDGED, "the caller keeps waiting on music"
    rig.clock.tick()
    assert heard(caller) == 500
    answer.set()
    assert (await asyncio.wait_for(transfer, 2)).outcome is Outcome.ANSWERED
    assert call.agent is target and ("hang_up", agent) not in rig.channel.actions
    target.media.hear(tone(33))
    rig.clock.tick()
    assert heard(caller) == 33


async def test_an_agent_gone_and_a_failed_transfer_end_the_call(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    fail = asyncio.Event()

    async def ring(abandon: asyncio.Event) -> Attempt:
        await fail.wait()
        return Attempt(Outcome.NO_ANSWER, None, "no answer within 30s")

    rig.channel.ring_outcome = ring
    consult = asyncio.ensure_future(
        rig.switch.control.consult(call.call_id, TargetKind.EXTENSION, "8002", "a1", 30)
    )
    await settle()
    rig.channel.far_end_hangs_up(agent)
    fail.set()
    assert (await asyncio.wait_for(consult, 2)).outcome is Outcome.NO_ANSWER
    ended = rig.events.of("ended", call.call_id)
    assert ended["reason"] is EndReason.AGENT_HANGUP
    assert ended["detail"] == (
        "the agent left during a consult with 8002 that failed: no answer within 30s"
    )
    assert ("hang_up", caller) in rig.channel.actions
