"""kamailio (Debian 5.6) as a record-routing proxy in front of the gateway: the caller's
dialog runs through it, so the gateway's own BYE must carry the route set (RFC 3261 12.2.1.1,
loose routing) - without it the proxy answers 404 and the caller is never released. Audio
between the proxied caller (PJSUA2) and a registered phone (PJSUA2) is checked by signal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.channels.sip import SipLeg
from gateway.core.contracts import Outcome
from tests.e2e.sip.conftest import Spawn, kamailio, pjsua_argv
from tests.e2e.sip.gateway import HOST, GatewayUnderTest
from tests.e2e.sip.signal import assert_hears

pytestmark = pytest.mark.e2e

PROXY_PORT = 26070
CALLER_HZ, PHONE_HZ = 900.0, 1300.0


async def test_gateway_bye_follows_the_record_route_through_kamailio(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path
) -> None:
    proxy = await kamailio(peers, tmp_path, port=PROXY_PORT, gateway=f"{HOST}:{gateway.port}")
    server = f"{HOST}:{gateway.port}"
    phone = await peers(
        "pjsua-phone",
        pjsua_argv(
            server=server,
            local_port=26111,
            rtp_port=38500,
            register="8002",
            password="8002-demo",
            tone=int(PHONE_HZ),
            record=tmp_path / "phone.wav",
            max_seconds=40,
        ),
    )
    await phone.expect("registered")
    caller = await peers(
        "pjsua-caller",
        pjsua_argv(
            server=server,
            local_port=26112,
            rtp_port=38600,
            call=f"sip:10000@{server}",
            proxy=f"{HOST}:{PROXY_PORT}",
            tone=int(CALLER_HZ),
            record=tmp_path / "caller.wav",
            max_seconds=40,
        ),
    )
    call = await gateway.next_call()
    leg = call.caller
    assert isinstance(leg, SipLeg) and leg.dialog is not None
    assert leg.dialog.route_set and str(PROXY_PORT) in leg.dialog.route_set[0]
    gateway.switch.answer(call.call_id)
    await caller.expect("confirmed")
    attempt = await gateway.switch.connect(call.call_id, "8002", 10.0, "agent2", "support")
    assert attempt.outcome is Outcome.ANSWERED, attempt.detail
    await phone.expect("confirmed")
    await caller.expect("media")
    await asyncio.sleep(4)
    gateway.switch.hangup(call.call_id, "test over")  # our BYE to the caller, via the proxy
    await caller.expect("disconnected", timeout_s=10)
    await phone.expect("disconnected", timeout_s=10)
    assert await caller.wait() == 0, caller.tail()
    assert await phone.wait() == 0, phone.tail()
    assert not any("404" in line and "without our Route" in line for line in proxy.lines)
    assert_hears(tmp_path / "caller.wav", PHONE_HZ, not_freq=CALLER_HZ, what="caller hears phone")
    assert_hears(tmp_path / "phone.wav", CALLER_HZ, not_freq=PHONE_HZ, what="phone hears caller")
