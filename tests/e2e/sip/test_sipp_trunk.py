"""The outside trunk against SIPp playing the carrier: Originate answered after a 401
challenge and a reliable 183 (PRACK as UAC), the number in E.164 and our identity in
P-Asserted-Identity, two-way audio through the echo; REGISTER with digest (right and wrong
password) over UDP and TCP; the OPTIONS keepalive marking the trunk up and then down, seen in
the metric and the TrunkStateChanged fact; limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.channels.sip import CarrierConfig, SipLeg
from gateway.channels.sip.numbering import NumberRules
from gateway.core.contracts import Outcome
from gateway.sip.transaction import Timers
from tests.e2e.sip.conftest import Spawn, sipp, sipp_failure
from tests.e2e.sip.gateway import PROMPT_TONE_HZ, start_gateway
from tests.e2e.sip.test_sipp_carrier import Capture, hears

pytestmark = pytest.mark.e2e

CARRIER_PORT = 26301
FAST = Timers(t1=0.05, t2=0.4, t4=0.5, d=0.5)


def carrier(**kw: object) -> CarrierConfig:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": CARRIER_PORT,
        "domain": "carrier.test",
        "username": "acct",
        "password": "s3cret",
        "keepalive_s": 0.0,
        "number_out": NumberRules.parse("00=>+,0=>+86"),
        "caller_id": "+861012345",
        "retry_min_s": 60.0,
    }
    values.update(kw)
    return CarrierConfig(**values)  # type: ignore[arg-type]


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"trunk": "sip-trunk", "site": "conformance"})


async def carrier_sipp(peers: Spawn, tmp_path: Path, scenario: str, **kw: object):  # noqa: ANN201
    return await sipp(peers, tmp_path, scenario, local_port=CARRIER_PORT, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_originate_answers_the_challenge_pracks_the_183_and_talks(
    tmp_path: Path, peers: Spawn, transport: str
) -> None:
    uas = await carrier_sipp(
        peers,
        tmp_path,
        "carrier_uas.xml",
        media_port=38400,
        transport=transport,
        extra=["-rtp_echo"],
    )
    await asyncio.sleep(0.3)  # SIPp listening
    gw = await start_gateway(tmp_path, carrier=carrier(transport=transport))
    try:
        attempt, call = await gw.switch.originate(
            "sip-trunk", "013800138000", "after_dial", 15, diverted_from="01088886666"
        )
        assert attempt.outcome is Outcome.ANSWERED, attempt.detail
        assert call is not None and call.outbound and call.dnis == "013800138000"
        cap = Capture()
        call.caller.media.on_audio = cap
        await gw.switch.play(call.call_id, "tone", barge_in=False, loop=True)
        assert await hears(cap, PROMPT_TONE_HZ) > 0.6, "our tone comes back from the carrier"
        gw.switch.hangup(call.call_id, "done")
        assert await uas.wait(20) == 0, sipp_failure(uas, tmp_path)
    finally:
        await gw.stop()


async def test_originate_retries_a_422_with_the_carriers_min_se(
    tmp_path: Path, peers: Spawn
) -> None:
    uas = await carrier_sipp(peers, tmp_path, "carrier_422.xml", media_port=38410)
    await asyncio.sleep(0.3)
    gw = await start_gateway(tmp_path, carrier=carrier(username="", password=""))
    try:
        attempt, call = await gw.switch.originate("sip-trunk", "013800138000", "after_dial", 15)
        assert attempt.outcome is Outcome.ANSWERED, attempt.detail
        assert call is not None
        leg = call.caller
        assert isinstance(leg, SipLeg) and leg.session_timer is not None
        assert leg.session_timer.interval == 3600 and not leg.session_timer.we_refresh
        gw.switch.hangup(call.call_id, "done")
        assert await uas.wait(20) == 0, sipp_failure(uas, tmp_path)
    finally:
        await gw.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_register_with_digest_marks_the_trunk_up(
    tmp_path: Path, peers: Spawn, transport: str
) -> None:
    contact = "&lt;sip:hotline@127.0.0.1:[0-9]+" + (";transport=tcp" if transport == "tcp" else "")
    uas = await carrier_sipp(
        peers,
        tmp_path,
        "registrar_uas.xml",
        transport=transport,
        keys={"contact_re": contact + "&gt;"},
    )
    await asyncio.sleep(0.3)
    gw = await start_gateway(tmp_path, carrier=carrier(register=True, transport=transport))
    try:
        name, up, detail = await gw.trunk_state(True)
        assert (name, up) == ("sip-trunk", True) and "REGISTER 200" in detail
        assert gauge("hotline_sip_trunk_up") == 1
        assert gauge("hotline_sip_trunk_registered") == 1
        assert await uas.wait(10) == 0, sipp_failure(uas, tmp_path)
    finally:
        await gw.stop()


async def test_register_with_a_wrong_password_keeps_the_trunk_down(
    tmp_path: Path, peers: Spawn
) -> None:
    uas = await carrier_sipp(
        peers, tmp_path, "registrar_uas.xml", keys={"contact_re": "&lt;sip:hotline@.*&gt;"}
    )
    await asyncio.sleep(0.3)
    gw = await start_gateway(tmp_path, carrier=carrier(register=True, password="wrong"))
    try:
        name, up, detail = await gw.trunk_state(False)
        assert "REGISTER 403 Wrong Credentials" in detail
        assert gauge("hotline_sip_trunk_up") == 0
        attempt, call = await gw.switch.originate("sip-trunk", "0101234", "after_dial", 5)
        assert attempt.outcome is Outcome.NO_LINE and "down" in attempt.detail and call is None
        assert await uas.wait(10) == 0, sipp_failure(uas, tmp_path)
    finally:
        await gw.stop()


async def test_options_keepalive_marks_the_trunk_up_then_down(tmp_path: Path, peers: Spawn) -> None:
    uas = await carrier_sipp(peers, tmp_path, "options_uas.xml")
    await asyncio.sleep(0.3)
    gw = await start_gateway(tmp_path, timers=FAST, carrier=carrier(keepalive_s=0.5))
    try:
        _, up, detail = await gw.trunk_state(True)
        assert "OPTIONS 200" in detail and gauge("hotline_sip_trunk_up") == 1
        assert await uas.wait(10) == 0, sipp_failure(uas, tmp_path)
        _, up, detail = await gw.trunk_state(False, timeout_s=20)
        assert "no answer" in detail and gauge("hotline_sip_trunk_up") == 0
    finally:
        await gw.stop()


async def test_max_calls_and_calls_per_second(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, carrier=carrier(max_calls=1, calls_per_second=0.01))
    try:
        assert gw.carrier is not None
        gw.carrier.active.add("a-live-call")
        attempt, _ = await gw.switch.originate("sip-trunk", "0101234", "after_dial", 5)
        assert attempt.outcome is Outcome.NO_LINE and "1 calls (its max)" in attempt.detail
        gw.carrier.active.clear()
        first, _ = await gw.switch.originate("sip-trunk", "0101234", "after_dial", 0.5)
        assert first.outcome is Outcome.NO_ANSWER, "nobody at the carrier's port answers"
        second, _ = await gw.switch.originate("sip-trunk", "0101234", "after_dial", 0.5)
        assert second.outcome is Outcome.NO_LINE and "calls per second" in second.detail
    finally:
        await gw.stop()
