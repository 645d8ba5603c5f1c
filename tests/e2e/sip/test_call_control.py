"""Call control with real phones (PJSUA2), proven by signal: every party sends its own tone and
what each one recorded shows whom it heard, and when.

Hold (from the desk, and by the agent's phone with a re-INVITE): the caller hears the hold
music and not the agent, then the agent again. Blind transfer (CallControl, and REFER from the
phone with NOTIFY progress) and attended transfer from the phone (REFER with Replaces): the
caller ends up hearing the new agent. Conference: each hears all the others, never itself.
Monitor: in LISTEN nobody hears the supervisor; in WHISPER the agent does, the caller not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.core import steps
from gateway.core.calls import Call
from gateway.core.contracts import Outcome
from gateway.core.control import TargetKind
from gateway.core.parties import MonitorMode
from tests.e2e.sip.conftest import Peer, Spawn, pjsua_argv, sipp, sipp_failure
from tests.e2e.sip.gateway import HOLD_TONE_HZ, HOST, GatewayUnderTest, start_gateway
from tests.e2e.sip.signal import longest_run, loud_part, phases, timeline, tone_share

pytestmark = pytest.mark.e2e

CALLER_HZ, AGENT_HZ, OTHER_HZ, THIRD_HZ, SUPERVISOR_HZ = 1100, 700, 900, 1300, 1700
TONES = {
    "caller": CALLER_HZ,
    "agent": AGENT_HZ,
    "other": OTHER_HZ,
    "third": THIRD_HZ,
    "supervisor": SUPERVISOR_HZ,
    "moh": HOLD_TONE_HZ,
}


async def phone(
    peers: Spawn,
    tmp_path: Path,
    gateway: GatewayUnderTest,
    name: str,
    ext: str,
    n: int,
    hz: int,
    **extra: object,
) -> Peer:
    """A registered PJSUA2 phone on extension ``ext`` sending ``hz``."""
    peer = await peers(
        name,
        pjsua_argv(
            server=f"{HOST}:{gateway.port}",
            local_port=26110 + n,
            rtp_port=38300 + 100 * n,
            register=ext,
            password=f"{ext}-demo",
            tone=hz,
            record=tmp_path / f"{name}.wav",
            max_seconds=45,
            **extra,
        ),
    )
    await peer.expect("registered")
    return peer


async def caller_bridged_to(
    peers: Spawn, tmp_path: Path, gateway: GatewayUnderTest, ext: str, hangup_after: float
) -> tuple[Peer, Call]:
    """A caller on the trunk, answered and bridged to ``ext``."""
    server = f"{HOST}:{gateway.port}"
    caller = await peers(
        "caller",
        pjsua_argv(
            server=server,
            local_port=26110,
            rtp_port=38200,
            call=f"sip:10000@{server}",
            tone=CALLER_HZ,
            record=tmp_path / "caller.wav",
            hangup_after=hangup_after,
            max_seconds=45,
        ),
    )
    call = await gateway.next_call()
    gateway.switch.answer(call.call_id)
    attempt = await gateway.switch.connect(call.call_id, ext, 10.0, "agent1", "support")
    assert attempt.outcome is Outcome.ANSWERED, attempt.detail
    return caller, call


async def done(*peers_: Peer) -> None:
    for peer in peers_:
        await peer.expect("disconnected", timeout_s=30)
        assert await peer.wait() == 0, peer.tail()


def heard(tmp_path: Path, name: str) -> list[dict[str, float]]:
    return timeline(tmp_path / f"{name}.wav", TONES)


def caller_ends_with_the_other_agent(tmp_path: Path) -> list[str]:
    """The caller first heard the agent, last (for at least 2 s) the other agent."""
    windows = heard(tmp_path, "caller")
    seq = phases(windows)
    assert seq[0] == "agent" and seq[-1] == "other", seq
    assert len(longest_run(windows, "other")) >= 8
    return seq


def step_kinds(gateway: GatewayUnderTest, call: Call) -> list[type]:
    return [type(s) for c, s in gateway.events.steps if c == call.call_id]


async def test_desk_hold_the_caller_hears_music_not_the_agent(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    agent = await phone(peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=10)
    await asyncio.sleep(2.5)
    await gateway.switch.control.hold(call.call_id)
    await agent.expect("remote-hold")  # the agent's phone was re-INVITEd sendonly
    await asyncio.sleep(3)
    await gateway.switch.control.resume(call.call_id)
    await done(caller, agent)
    windows = heard(tmp_path, "caller")
    assert phases(windows) == ["agent", "moh", "agent"], windows
    on_hold = longest_run(windows, "moh")
    assert len(on_hold) >= 8, "at least 2 s of hold music"
    inside = on_hold[1:-1]  # the edge windows straddle the switch
    assert max(w["agent"] for w in inside) < 0.05, "the held caller must not hear the agent"
    agent_heard = heard(tmp_path, "agent")
    assert max(w["moh"] for w in agent_heard) < 0.05, "the agent never hears the hold music"
    assert step_kinds(gateway, call) == [steps.Held, steps.Resumed]
    assert call.hold_count == 1 and 2500 <= call.hold_ms <= 4500


async def test_a_phone_holding_by_itself_gives_the_caller_music(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    agent = await phone(
        peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ, hold_after=2.5, unhold_after=6
    )
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=10)
    await agent.expect("hold-sent", timeout_s=10)
    await agent.expect("unhold-sent", timeout_s=10)
    await done(caller, agent)
    windows = heard(tmp_path, "caller")
    assert phases(windows) == ["agent", "moh", "agent"], windows
    on_hold = longest_run(windows, "moh")
    assert len(on_hold) >= 8 and max(w["agent"] for w in on_hold[1:-1]) < 0.05
    held = [s for c, s in gateway.events.steps if c == call.call_id and isinstance(s, steps.Held)]
    assert [h.by for h in held] == ["phone"]
    assert call.hold_count == 1


async def test_blind_transfer_from_the_desk_the_caller_hears_the_new_agent(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    agent = await phone(peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ)
    other = await phone(peers, tmp_path, gateway, "other", "8002", 2, OTHER_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=9)
    await asyncio.sleep(2.5)
    attempt = await gateway.switch.control.transfer(
        call.call_id, TargetKind.EXTENSION, "8002", "agent1", 10
    )
    assert attempt.outcome is Outcome.ANSWERED, attempt.detail
    await agent.expect("disconnected", timeout_s=10)  # the transferor's leg is released
    await done(caller, other)
    caller_ends_with_the_other_agent(tmp_path)
    assert len(longest_run(heard(tmp_path, "other"), "caller")) >= 8, "the new agent hears"
    moved = [s for c, s in gateway.events.steps if isinstance(s, steps.Transferred)]
    assert [(m.kind, m.target_kind, m.target) for m in moved] == [("blind", "extension", "8002")]


async def test_refer_from_the_phone_blind_transfer_with_notify_progress(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    server = f"{HOST}:{gateway.port}"
    agent = await phone(
        peers,
        tmp_path,
        gateway,
        "agent",
        "8001",
        1,
        AGENT_HZ,
        xfer_to=f"sip:8002@{server}",
        xfer_after=2.5,
    )
    other = await phone(peers, tmp_path, gateway, "other", "8002", 2, OTHER_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=9)
    await agent.expect("xfer-sent", timeout_s=10)
    await agent.expect("xfer-status 200", timeout_s=15)  # NOTIFY sipfrag "SIP/2.0 200 OK"
    await agent.expect("disconnected", timeout_s=10)
    await done(caller, other)
    caller_ends_with_the_other_agent(tmp_path)


async def test_refer_with_replaces_attended_transfer_from_the_phone(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    server = f"{HOST}:{gateway.port}"
    agent = await phone(
        peers,
        tmp_path,
        gateway,
        "agent",
        "8001",
        1,
        AGENT_HZ,
        consult=f"sip:10001@{server}",
        consult_after=2.5,
        replaces_after=6,
    )
    other = await phone(peers, tmp_path, gateway, "other", "8002", 2, OTHER_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=11)
    consult = await gateway.next_call()  # the agent's phone calls a colleague: a second call
    gateway.switch.answer(consult.call_id)
    attempt = await gateway.switch.connect(consult.call_id, "8002", 10.0, "agent2", "")
    assert attempt.outcome is Outcome.ANSWERED, attempt.detail
    await agent.expect("replaces-sent", timeout_s=10)
    await agent.expect("xfer-status 200", timeout_s=10)
    await done(caller, other)
    assert "moh" in caller_ends_with_the_other_agent(tmp_path)
    other_heard = phases(heard(tmp_path, "other"))
    assert other_heard[0] == "agent" and other_heard[-1] == "caller", other_heard
    assert consult.ended.is_set()
    moved = [s for c, s in gateway.events.steps if isinstance(s, steps.Transferred)]
    assert [(m.kind, m.target) for m in moved] == [("attended", "8002")]


async def test_conference_each_hears_all_others_never_itself(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    agent = await phone(peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ)
    other = await phone(peers, tmp_path, gateway, "other", "8002", 2, OTHER_HZ)
    third = await phone(peers, tmp_path, gateway, "third", "8003", 3, THIRD_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=9)
    for ext, expect in (("8002", 3), ("8003", 4)):
        attempt = await gateway.switch.control.add_party(
            call.call_id, TargetKind.EXTENSION, ext, "agent1", 10
        )
        assert attempt.outcome is Outcome.ANSWERED, attempt.detail
        assert gateway.switch.control.parties_in(call.call_id) == expect
    await done(caller, agent, other, third)
    names = ["caller", "agent", "other", "third"]
    for name in names:
        others = [n for n in names if n != name]
        windows = heard(tmp_path, name)
        room = [w for w in windows if all(w[n] >= 0.1 for n in others)]
        assert len(room) >= 8, f"{name} heard all of {others} for less than 2 s"
        assert max(w[name] for w in windows) < 0.05, f"{name} hears itself"
    joined = [s for c, s in gateway.events.steps if isinstance(s, steps.ConferenceJoined)]
    assert [j.parties for j in joined] == [3, 4]


async def test_monitor_listen_then_whisper(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    agent = await phone(peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ)
    supervisor = await phone(peers, tmp_path, gateway, "supervisor", "8009", 4, SUPERVISOR_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=10)
    attempt, leg_id = await gateway.switch.control.monitor(
        call.call_id, MonitorMode.LISTEN, "sup1", "8009", 10
    )
    assert attempt.outcome is Outcome.ANSWERED and leg_id
    await asyncio.sleep(3.5)
    await gateway.switch.control.monitor(call.call_id, MonitorMode.WHISPER, "sup1", "", 10)
    await done(caller, agent, supervisor)
    caller_heard = heard(tmp_path, "caller")
    assert max(w["supervisor"] for w in caller_heard) < 0.05, "the caller never hears him"
    agent_heard = heard(tmp_path, "agent")
    first = next(i for i, w in enumerate(agent_heard) if w["supervisor"] >= 0.2)
    listening = [w for w in agent_heard[:first] if w["caller"] >= 0.5]
    assert len(listening) >= 8, "in LISTEN the agent heard the caller only"
    whisper = longest_run(agent_heard, "supervisor", 0.2)
    assert len(whisper) >= 8 and min(w["caller"] for w in whisper) >= 0.2
    sup_heard = heard(tmp_path, "supervisor")
    assert len([w for w in sup_heard if w["caller"] >= 0.1 and w["agent"] >= 0.1]) >= 8
    modes = [s.mode for c, s in gateway.events.steps if isinstance(s, steps.MonitorStarted)]
    assert modes == ["listen", "whisper"]


async def test_sipp_phone_holds_then_refers_202_and_sipfrag_notifies(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    """SIPp as the agent's phone: its own hold re-INVITE (the caller hears music), then a
    blind REFER answered 202 with NOTIFYs "100 Trying" and "200 OK" (checked by SIPp)."""
    server = f"{HOST}:{gateway.port}"
    keys = {
        "ext": "8005",
        "password": "8005-demo",
        "contact_port": "26121",
        "target": f"8002@{server}",
    }
    agent = await sipp(
        peers, tmp_path, "phone_hold_refer.xml", local_port=26121, media_port=38900, keys=keys
    )
    register = await sipp(
        peers, tmp_path, "phone_register.xml", local_port=26120, target=server, keys=keys
    )
    assert await register.wait(10) == 0, sipp_failure(register, tmp_path)
    other = await phone(peers, tmp_path, gateway, "other", "8002", 2, OTHER_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8005", hangup_after=10)
    assert await agent.wait(25) == 0, sipp_failure(agent, tmp_path)
    await done(caller, other)
    windows = heard(tmp_path, "caller")
    seq = phases(windows)
    assert "moh" in seq and seq[-1] == "other", seq
    assert len(longest_run(windows, "other")) >= 8
    kinds = step_kinds(gateway, call)
    assert kinds[:2] == [steps.Held, steps.Resumed] and steps.Transferred in kinds


async def test_consult_from_the_desk_then_complete(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    """Consult: the caller hears music (not the agent, not the target) while agent and target
    talk; COMPLETE: the caller hears the target, the agent is released."""
    agent = await phone(peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ)
    other = await phone(peers, tmp_path, gateway, "other", "8002", 2, OTHER_HZ)
    caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=11)
    await asyncio.sleep(2.5)
    attempt = await gateway.switch.control.consult(
        call.call_id, TargetKind.EXTENSION, "8002", "agent1", 10
    )
    assert attempt.outcome is Outcome.ANSWERED, attempt.detail
    await asyncio.sleep(3)
    gateway.switch.control.end_consult(call.call_id, "complete")
    await agent.expect("disconnected", timeout_s=10)
    await done(caller, other)
    windows = heard(tmp_path, "caller")
    assert phases(windows) == ["agent", "moh", "other"], phases(windows)
    on_hold = longest_run(windows, "moh")[1:-1]
    assert len(on_hold) >= 8 and max(w["agent"] + w["other"] for w in on_hold) < 0.05
    agent_heard = phases(heard(tmp_path, "agent"))
    assert agent_heard == ["caller", "other"], agent_heard
    other_heard = phases(heard(tmp_path, "other"))
    assert other_heard == ["agent", "caller"], other_heard
    kinds = step_kinds(gateway, call)
    assert steps.ConsultStarted in kinds and steps.ConsultEnded in kinds


async def test_click_to_dial_rings_the_agent_then_the_customer(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    """DialOut to an internal number: the agent's phone rings first, then the customer's;
    both talk (each hears the other's tone), and the call is outbound and bridged."""
    agent = await phone(peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ, hangup_after=5)
    customer = await phone(peers, tmp_path, gateway, "other", "8002", 2, OTHER_HZ)
    attempt, call_id = await gateway.switch.control.dial_out(
        "agent1", "8001", TargetKind.EXTENSION, "8002", "", 10
    )
    assert attempt.outcome is Outcome.ANSWERED, attempt.detail
    call = gateway.switch.registry.get(call_id)
    assert call.outbound and call.agent_id == "agent1" and call.state.value == "bridged"
    await done(agent, customer)
    assert len(longest_run(heard(tmp_path, "agent"), "other")) >= 8, "the agent hears"
    assert len(longest_run(heard(tmp_path, "other"), "agent")) >= 8, "the customer hears"


async def test_blind_transfer_to_an_outside_number_on_an_analog_line(
    peers: Spawn, tmp_path: Path
) -> None:
    """The caller is transferred to a number: an analog line (simulated card) is seized,
    dialled and bridged; the caller hears the far party, the line carries the caller."""
    gateway = await start_gateway(tmp_path, analog_lines=2)
    try:
        agent = await phone(peers, tmp_path, gateway, "agent", "8001", 1, AGENT_HZ)
        caller, call = await caller_bridged_to(peers, tmp_path, gateway, "8001", hangup_after=9)
        exchange = gateway.card.exchange if gateway.card is not None else None
        assert exchange is not None
        await asyncio.sleep(2.5)
        attempt = await gateway.switch.control.transfer(
            call.call_id, TargetKind.NUMBER, "62345678", "agent1", 10
        )
        assert attempt.outcome is Outcome.ANSWERED, attempt.detail
        line = next(k for k in (1, 2) if exchange.line(k).dialled == "62345678")
        exchange.play_tone(line, THIRD_HZ, 20000)  # the far party talks
        await agent.expect("disconnected", timeout_s=10)
        await done(caller)
        windows = heard(tmp_path, "caller")
        seq = phases(windows)
        assert seq[0] == "agent" and seq[-1] == "third", seq
        assert len(longest_run(windows, "third")) >= 8
        sent = exchange.captured(line).astype(np.float64)[-20000:]  # the last 2.5 s, bridged
        assert tone_share(loud_part(sent, 8000), 8000, CALLER_HZ) > 0.6, "the line hears the caller"
        moved = [s for c, s in gateway.events.steps if isinstance(s, steps.Transferred)]
        assert [(m.target_kind, m.target) for m in moved] == [("number", "62345678")]
    finally:
        await gateway.stop()
