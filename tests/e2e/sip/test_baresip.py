"""baresip (Debian 1.0) as a registered phone over UDP and TCP: it registers with digest,
auto-answers the gateway's INVITE, talks with a PJSUA2 caller through the bridge (audio
checked by signal in both recordings) and is released by the gateway's BYE."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from gateway.core.contracts import Outcome
from tests.e2e.sip.conftest import Spawn, baresip, pjsua_argv
from tests.e2e.sip.gateway import HOST, GatewayUnderTest
from tests.e2e.sip.signal import assert_hears, tone_frames

pytestmark = pytest.mark.e2e

CALLER_HZ, PHONE_HZ = 1250.0, 500.0


def write_tone(path: Path, freq: float, seconds: float) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(tone_frames(freq, seconds).astype("<i2").tobytes())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_phone_talks_with_a_caller(
    gateway: GatewayUnderTest, peers: Spawn, tmp_path: Path, transport: str
) -> None:
    tone = tmp_path / "phone-tone.wav"
    write_tone(tone, PHONE_HZ, 30)
    server = f"{HOST}:{gateway.port}"
    phone, dumps = await baresip(
        peers,
        tmp_path,
        name=f"baresip-{transport}",
        account=(
            f"<sip:8003@{server};transport={transport}>;auth_pass=8003-demo;"
            "answermode=auto;regint=300"
        ),
        sip_port=26131,
        rtp_ports="38700-38799",
        tone=tone,
    )
    for _ in range(200):  # bounded: until the registration is in the registrar
        if gateway.channel.registrar.lookup("8003") is not None:
            break
        await asyncio.sleep(0.05)
    binding = gateway.channel.registrar.lookup("8003")
    assert binding is not None, phone.tail()
    assert binding.transport.name == transport.upper()
    caller = await peers(
        f"pjsua-caller-{transport}",
        pjsua_argv(
            server=server,
            local_port=26132,
            rtp_port=38800,
            call=f"sip:10000@{server}",
            tone=int(CALLER_HZ),
            record=tmp_path / "caller.wav",
            max_seconds=40,
        ),
    )
    call = await gateway.next_call()
    gateway.switch.answer(call.call_id)
    await caller.expect("confirmed")
    attempt = await gateway.switch.connect(call.call_id, "8003", 10.0, "agent3", "support")
    assert attempt.outcome is Outcome.ANSWERED, f"{attempt.detail}\n{phone.tail()}"
    await asyncio.sleep(4)
    gateway.switch.hangup(call.call_id, "test over")
    await caller.expect("disconnected", timeout_s=10)
    await caller.wait()
    heard = sorted(dumps.glob("dump-*-dec.wav"))
    for _ in range(100):  # the dump is closed when baresip ends the call
        if heard and heard[-1].stat().st_size > 8000:
            break
        await asyncio.sleep(0.05)
        heard = sorted(dumps.glob("dump-*-dec.wav"))
    assert heard, f"baresip recorded nothing: {phone.tail()}"
    assert_hears(heard[-1], CALLER_HZ, not_freq=PHONE_HZ, what="baresip hears the caller")
    assert_hears(tmp_path / "caller.wav", PHONE_HZ, not_freq=CALLER_HZ, what="caller hears baresip")
