"""The gateway's switch with fake channels: offer, answer, no answer, caller gone, far-end
hang-up, ringing an endpoint, bridge, recording start/stop, prompts and digits, originate."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.core.calls import CallGone, CallState, EndReason
from gateway.core.contracts import Attempt, Outcome, Release
from gateway.core.prompts import PromptNotFound
from gateway.core.switch import CommandError
from tests.unit.gateway_rig import SITE, FakeLeg, Rig, make_rig, settle, tone


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path)
    yield made
    await made.switch.stop()


# ---- offer and answer ----------------------------------------------------------------------


async def test_an_offered_call_rings_and_is_announced(rig: Rig) -> None:
    leg, call = rig.channel.new_call(ani="13800138000", dnis="10001")
    assert call.state is CallState.OFFERED
    assert (call.ani, call.dnis, call.caller_name) == ("13800138000", "10001", "Zhang Wei")
    assert rig.channel.did("ring") == [leg]
    assert rig.events.kinds(call.call_id) == ["offered"]
    assert rig.events.of("offered", call.call_id) == {"outbound": False}


async def test_answer_connects_the_caller_once(rig: Rig) -> None:
    leg, call = rig.channel.new_call()
    rig.switch.answer(call.call_id)
    rig.switch.answer(call.call_id)  # twice is harmless
    assert call.state is CallState.ANSWERED
    assert leg.answered
    assert rig.channel.did("answer") == [leg]
    assert rig.events.kinds(call.call_id) == ["offered", "answered"]


async def test_a_call_nobody_answers_is_released_and_the_caller_rejected(rig: Rig) -> None:
    leg, call = rig.channel.new_call()
    await asyncio.sleep(0.3)  # past answer_timeout_s
    assert call.state is CallState.ENDED
    assert rig.channel.did("reject") == [leg]
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.TIMEOUT


async def test_caller_gone_before_answer_ends_the_call_without_signalling_back(rig: Rig) -> None:
    leg, call = rig.channel.new_call()
    rig.channel.far_end_hangs_up(leg)
    assert call.state is CallState.ENDED
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.CALLER_HANGUP
    assert rig.channel.did("reject") == [] and rig.channel.did("hang_up") == []
    with pytest.raises(CallGone):
        rig.switch.answer(call.call_id)


async def test_far_end_line_signal_is_reason_far_end(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    rig.channel.far_end_hangs_up(leg, Release.FAR_END)
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.FAR_END


async def test_signalling_timeout_is_reason_timeout(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    rig.channel.far_end_hangs_up(leg, Release.TIMEOUT)
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.TIMEOUT


async def test_a_release_of_an_unknown_or_ended_leg_is_ignored(rig: Rig) -> None:
    leg, call = rig.channel.new_call()
    rig.channel.far_end_hangs_up(leg)
    rig.channel.far_end_hangs_up(leg)  # repeated: still one end
    rig.channel.far_end_hangs_up(FakeLeg(rig.channel))  # never offered
    assert rig.events.kinds(call.call_id).count("ended") == 1


def active_gauge() -> dict[str, float | None]:
    """hotline_active_calls of the rig's site as a scrape sees it, by state."""
    return {
        s.value: REGISTRY.get_sample_value("hotline_active_calls", {"state": s.value, "site": SITE})
        for s in CallState
        if s is not CallState.ENDED
    }


def recount(rig: Rig) -> dict[str, float | None]:
    """The live calls by state, counted one by one."""
    live = rig.switch.registry.live()
    return {
        s.value: float(sum(c.state is s for c in live))
        for s in CallState
        if s is not CallState.ENDED
    }


async def test_the_active_calls_gauge_is_a_recount_of_the_live_calls(rig: Rig) -> None:
    assert active_gauge() == {"offered": 0.0, "answered": 0.0, "bridged": 0.0}
    offered = [rig.channel.new_call()[1] for _ in range(4)]
    answered = [(await rig.answered_call())[1] for _ in range(3)]
    bridged = [(await rig.bridged_call())[2] for _ in range(3)]
    assert active_gauge() == {"offered": 4.0, "answered": 3.0, "bridged": 3.0} == recount(rig)
    rig.switch.hangup(offered[0].call_id, "test")
    rig.switch.hangup(answered[0].call_id, "test")
    rig.switch.hangup(bridged[0].call_id, "test")
    rig.switch.answer(offered[1].call_id)
    rig.switch.unbridge(bridged[1])  # a transfer to a queue: answered again
    assert active_gauge() == {"offered": 2.0, "answered": 4.0, "bridged": 1.0} == recount(rig)
    await settle()  # the ended calls are forgotten
    assert active_gauge() == recount(rig)
    await rig.switch.stop()
    assert active_gauge() == {"offered": 0.0, "answered": 0.0, "bridged": 0.0}


# ---- prompts and digits --------------------------------------------------------------------


async def test_a_prompt_plays_frame_by_frame_to_the_caller(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    play = asyncio.create_task(rig.switch.play(call.call_id, "welcome", False, False))
    await settle()
    rig.clock.tick(4)  # 3 frames, then the end is noticed
    assert await asyncio.wait_for(play, 1) == (True, "")
    assert [int(f[0]) for f in leg.media.sent] == [1000, 1000, 1000]


async def test_a_key_press_interrupts_a_barge_in_prompt(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    play = asyncio.create_task(rig.switch.play(call.call_id, "welcome", True, False))
    await settle()
    rig.clock.tick(1)
    leg.media.key("5")
    assert await asyncio.wait_for(play, 1) == (False, "5")
    rig.clock.tick(3)
    assert len(leg.media.sent) == 1, "the prompt must stop at the key press"


async def test_prompts_are_refused_before_answer_and_unknown_names_are_not_found(rig: Rig) -> None:
    _, call = rig.channel.new_call()
    with pytest.raises(CommandError, match="offered"):
        await rig.switch.play(call.call_id, "welcome", False, False)
    rig.switch.answer(call.call_id)
    with pytest.raises(PromptNotFound, match="nope"):
        await rig.switch.play(call.call_id, "nope", False, False)
    with pytest.raises(PromptNotFound, match="invalid"):
        await rig.switch.play(call.call_id, "../etc/passwd", False, False)


async def test_a_prompt_to_a_caller_who_hangs_up_raises_call_gone(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    play = asyncio.create_task(rig.switch.play(call.call_id, "welcome", False, False))
    await settle()
    rig.channel.far_end_hangs_up(leg)
    with pytest.raises(CallGone):
        await asyncio.wait_for(play, 1)


async def test_digits_are_collected_until_max_terminator_or_timeout(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    for d in "12#":
        leg.media.key(d)
    assert await rig.switch.collect(call.call_id, 5, 1000, 1000, "#") == ("12", "terminator")
    leg.media.key("7")
    leg.media.key("8")
    assert await rig.switch.collect(call.call_id, 2, 1000, 1000, "") == ("78", "max_digits")
    assert await rig.switch.collect(call.call_id, 2, 30, 30, "") == ("", "timeout")


async def test_collecting_from_a_caller_who_hangs_up_returns_hangup(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    leg.media.key("4")
    collect = asyncio.create_task(rig.switch.collect(call.call_id, 3, 1000, 1000, ""))
    await settle()
    rig.channel.far_end_hangs_up(leg)
    assert await asyncio.wait_for(collect, 1) == ("4", "hangup")


# ---- ringing an endpoint and the bridge -------------------------------------------------------


async def test_connect_rings_the_endpoint_with_the_callers_identity_and_bridges(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    target, party, timeout = rig.channel.rung[0]
    assert (target, party.number, party.name, party.call_id, timeout) == (
        "8001",
        call.ani,
        "Zhang Wei",
        call.call_id,
        4.0,
    )
    assert call.state is CallState.BRIDGED
    assert (call.agent, call.agent_id, call.queue) == (agent, "agent1", "sales")
    assert rig.events.of("bridged", call.call_id) == {
        "leg_id": agent.leg_id,
        "endpoint": "8001",
        "agent_id": "agent1",
        "queue": "sales",
    }


async def test_bridged_parties_hear_each_other_and_the_recording_gets_both_sides(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    caller.media.hear(tone(111))
    agent.media.hear(tone(222))
    rig.clock.tick()
    assert [int(f[0]) for f in agent.media.sent] == [111]
    assert [int(f[0]) for f in caller.media.sent] == [222]
    (rec,) = rig.recorder.started
    assert (rec.call_id, rec.agent_id, rec.queue) == (call.call_id, "agent1", "sales")
    assert [(int(a[0]), int(b[0])) for a, b in rec.frames] == [(111, 222)]


async def test_a_bridge_stops_any_prompt_still_playing(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    await rig.switch.play(call.call_id, "hold", False, True)  # looping hold music
    rig.clock.tick(2)
    await rig.switch.connect(call.call_id, "8001", 4.0, "agent1", "sales")
    sent = len(leg.media.sent)
    rig.clock.tick(3)
    assert len(leg.media.sent) == sent, "no more hold music once bridged"


async def test_agent_hangup_ends_the_call_hangs_up_the_caller_and_finishes_recording(
    rig: Rig,
) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.channel.far_end_hangs_up(agent)
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.AGENT_HANGUP
    await asyncio.sleep(0.05)  # hang-up task, recording finish
    assert rig.channel.did("hang_up") == [caller]
    assert rig.recorder.started[0].finished
    assert set(rig.channel.did("release")) == {caller, agent}
    assert caller.media.closed and agent.media.closed
    assert call.call_id not in rig.switch.registry.calls


async def test_caller_hangup_while_bridged_hangs_up_the_agent(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.channel.far_end_hangs_up(caller)
    await settle()
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.CALLER_HANGUP
    assert rig.channel.did("hang_up") == [agent]


async def test_an_endpoint_that_does_not_answer_leaves_the_call_waiting(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    rig.channel.ring_outcome = lambda abandon: Attempt(Outcome.NO_ANSWER, None, "no answer")
    attempt = await rig.switch.connect(call.call_id, "8002", 4.0, "agent2", "sales")
    assert attempt.outcome is Outcome.NO_ANSWER
    assert call.state is CallState.ANSWERED and call.agent is None
    assert rig.recorder.started == []
    rig.channel.ring_outcome = lambda abandon: Attempt(
        Outcome.ANSWERED, FakeLeg(rig.channel, inbound=False, answered=True)
    )
    assert (
        await rig.switch.connect(call.call_id, "8003", 4.0, "agent3", "sales")
    ).outcome is Outcome.ANSWERED


async def test_a_second_connect_while_ringing_is_refused(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    release = asyncio.Event()

    async def hold(abandon: asyncio.Event) -> Attempt:
        await release.wait()
        return Attempt(Outcome.NO_ANSWER, None, "")

    rig.channel.ring_outcome = hold
    first = asyncio.create_task(rig.switch.connect(call.call_id, "8001", 4.0, "a1", "sales"))
    await settle()
    with pytest.raises(CommandError, match="already ringing"):
        await rig.switch.connect(call.call_id, "8002", 4.0, "a2", "sales")
    release.set()
    assert (await first).outcome is Outcome.NO_ANSWER


async def test_the_caller_hanging_up_while_ringing_abandons_the_endpoint(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    seen: list[bool] = []

    async def wait_abandon(abandon: asyncio.Event) -> Attempt:
        await asyncio.wait_for(abandon.wait(), 1)
        seen.append(True)
        return Attempt(Outcome.CALLER_GONE, None, "caller hung up while ringing")

    rig.channel.ring_outcome = wait_abandon
    connect = asyncio.create_task(rig.switch.connect(call.call_id, "8001", 4.0, "a1", "sales"))
    await settle()
    rig.channel.far_end_hangs_up(leg)
    assert (await asyncio.wait_for(connect, 1)).outcome is Outcome.CALLER_GONE
    assert seen == [True]


async def test_an_endpoint_answering_after_the_caller_left_is_hung_up(rig: Rig) -> None:
    leg, call = await rig.answered_call()
    agent = FakeLeg(rig.channel, inbound=False, answered=True)

    async def late(abandon: asyncio.Event) -> Attempt:
        await asyncio.wait_for(abandon.wait(), 1)
        return Attempt(Outcome.ANSWERED, agent, "")  # a channel that missed the abandon

    rig.channel.ring_outcome = late
    connect = asyncio.create_task(rig.switch.connect(call.call_id, "8001", 4.0, "a1", "sales"))
    await settle()
    rig.channel.far_end_hangs_up(leg)
    attempt = await asyncio.wait_for(connect, 1)
    assert attempt.outcome is Outcome.CALLER_GONE
    await asyncio.sleep(0.05)
    assert agent in rig.channel.did("hang_up") and agent in rig.channel.did("release")
    assert "bridged" not in rig.events.kinds(call.call_id)


async def test_connect_needs_an_answered_call(rig: Rig) -> None:
    _, call = rig.channel.new_call()
    with pytest.raises(CommandError, match="offered"):
        await rig.switch.connect(call.call_id, "8001", 4.0, "a1", "sales")
    with pytest.raises(CallGone):
        await rig.switch.connect("no-such-call", "8001", 4.0, "a1", "sales")


# ---- commands, originate, stop ---------------------------------------------------------------


async def test_hangup_command_ends_with_reason_system_and_hangs_up_both_legs(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    rig.switch.hangup(call.call_id, "")
    await settle()
    ended = rig.events.of("ended", call.call_id)
    assert (ended["reason"], ended["detail"]) == (EndReason.SYSTEM, "hung up by command")
    assert set(rig.channel.did("hang_up")) == {caller, agent}
    assert rig.switch.list_calls() == []


async def test_originate_places_an_answered_outbound_call(rig: Rig) -> None:
    attempt, call = await rig.switch.originate("fake", "95566", "after_dial", 5.0)
    assert attempt.outcome is Outcome.ANSWERED and call is not None
    assert rig.channel.placed == ["95566"]
    assert call.state is CallState.ANSWERED and call.dnis == "95566"
    assert rig.events.kinds(call.call_id) == ["offered", "answered"]
    assert rig.events.of("offered", call.call_id) == {"outbound": True}
    assert rig.channel.did("ring") == []


async def test_originate_on_an_unknown_trunk_names_the_trunks_there_are(rig: Rig) -> None:
    with pytest.raises(CommandError, match=r"'sip-out'.*have: fake"):
        await rig.switch.originate("sip-out", "95566", "after_dial", 5.0)


async def test_stop_ends_every_live_call_as_system(rig: Rig) -> None:
    _, first = await rig.answered_call()
    _, second = rig.channel.new_call()
    await rig.switch.stop()
    for call in (first, second):
        assert rig.events.of("ended", call.call_id)["reason"] is EndReason.SYSTEM
    assert rig.switch.list_calls() == []


async def test_drain_refuses_new_calls_and_waits_for_live_ones(rig: Rig) -> None:
    caller, agent, call = await rig.bridged_call()
    assert rig.switch.accepting
    drain = asyncio.create_task(rig.switch.drain(5.0))
    await asyncio.sleep(0.3)
    assert not rig.switch.accepting, "a draining switch tells channels to refuse new calls"
    assert not drain.done(), "the drain waits while a call is live"
    rig.channel.far_end_hangs_up(caller)
    await asyncio.wait_for(drain, 2)
    assert rig.events.of("ended", call.call_id)["reason"] is EndReason.CALLER_HANGUP


async def test_drain_gives_up_after_its_budget(rig: Rig) -> None:
    await rig.answered_call()
    await asyncio.wait_for(rig.switch.drain(0.3), 2)  # returns although the call is live
    assert len(rig.switch.list_calls()) == 1


# ---- memory: a finished call is not kept alive -------------------------------------------------


@pytest.mark.parametrize("answered", [True, False])
async def test_an_ended_call_is_not_kept_alive_by_its_answer_timeout(
    rig: Rig, answered: bool
) -> None:
    rig.switch.answer_timeout_s = 60.0  # far beyond the test: only its cancellation frees the call
    leg, call = rig.channel.new_call()
    if answered:
        rig.switch.answer(call.call_id)
    rig.channel.far_end_hangs_up(leg)
    await settle()  # the switch releases the leg and forgets the call at once
    assert call.state is CallState.ENDED
    assert rig.channel.did("release") == [leg]
    gone = weakref.ref(call)
    del call, leg
    rig.channel.actions.clear()  # the fake channel's own log of legs
    gc.collect()
    assert gone() is None


async def test_an_ended_bridged_call_is_released_and_forgotten_at_once(rig: Rig) -> None:
    """No linger in the switch: once the hang-ups have started and the recording is sealed,
    nothing of the call is left (the channel answers late messages about its legs)."""
    caller, agent, call = await rig.bridged_call()
    recording = rig.recorder.started[0]
    held = {
        "call": weakref.ref(call),
        "caller": weakref.ref(caller),
        "agent": weakref.ref(agent),
        "bridge": weakref.ref(call.bridge) if call.bridge is not None else None,
        "recording": weakref.ref(recording),
    }
    rig.channel.far_end_hangs_up(caller)
    assert call.state is CallState.ENDED and not rig.switch.list_calls()
    await settle()
    # the other leg is hung up first, then both are released; the call is forgotten
    assert [(a, leg) for a, leg in rig.channel.actions if a in ("hang_up", "release")] == [
        ("hang_up", agent),
        ("release", caller),
        ("release", agent),
    ]
    assert recording.finished
    assert call.call_id not in rig.switch.registry.calls
    assert rig.switch.registry.call_of(caller) is None
    assert rig.switch.registry.call_of(agent) is None
    assert not rig.switch._tasks
    del call, caller, agent, recording
    rig.channel.actions.clear()
    rig.recorder.started.clear()
    gc.collect()
    alive = [name for name, ref in held.items() if ref is not None and ref() is not None]
    assert alive == [], f"still referenced right after hang-up: {alive}"
