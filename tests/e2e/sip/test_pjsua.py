"""PJSUA2 (PJSIP 2.15 from the pjsua2-python wheel) as phone and caller, over UDP and TCP:
registration with digest, the trunk call answered and bridged to the registered phone,
two-way audio checked by signal on both sides, INFO DTMF, hang-up from either side."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.contracts import Outcome
from tests.e2e.sip.conftest import Spawn, pjsua_argv
from tests.e2e.sip.gateway import HOST, GatewayUnderTest
from tests.e2e.sip.signal import assert_hears

pytestmark = pytest.mark.e2e

CALLER_HZ, PHONE_HZ = 1100.0, 700.0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_pjsua_phone_and_caller_talk_through_the_gateway(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path, transport: str
) -> None:
    server = f"{HOST}:{gateway.port}"
    phone = await peers(
        f"pjsua-phone-{transport}",
        pjsua_argv(
            server=server,
            transport=transport,
            local_port=26101,
            rtp_port=38100,
            register="8001",
            password="8001-demo",
            tone=int(PHONE_HZ),
            record=tmp_path / "phone.wav",
            max_seconds=40,
        ),
    )
    await phone.expect("registered")
    caller = await peers(
        f"pjsua-caller-{transport}",
        pjsua_argv(
            server=server,
            transport=transport,
            local_port=26102,
            rtp_port=38200,
            call=f"sip:10000@{server}" + (";transport=tcp" if transport == "tcp" else ""),
            tone=int(CALLER_HZ),
            record=tmp_path / "caller.wav",
            codec="PCMA",
            info_dtmf="7",
            info_after=0.5,
            hangup_after=5,
            max_seconds=40,
        ),
    )
    call = await gateway.next_call()
    gateway.switch.answer(call.call_id)
    await caller.expect("confirmed")
    digits, why = await gateway.switch.collect(call.call_id, 1, 5000, 5000, "")
    assert (digits, why) == ("7", "max_digits"), "the INFO digit reaches digit collection"
    attempt = await gateway.switch.connect(call.call_id, "8001", 10.0, "agent1", "support")
    assert attempt.outcome is Outcome.ANSWERED, attempt.detail
    await phone.expect("confirmed")
    await caller.expect("disconnected", timeout_s=20)
    await phone.expect("disconnected", timeout_s=10)
    assert await caller.wait() == 0, caller.tail()
    assert await phone.wait() == 0, phone.tail()
    assert_hears(tmp_path / "caller.wav", PHONE_HZ, not_freq=CALLER_HZ, what="caller hears phone")
    assert_hears(tmp_path / "phone.wav", CALLER_HZ, not_freq=PHONE_HZ, what="phone hears caller")
