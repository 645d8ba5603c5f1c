"""The simulated card: real line audio through the DSP, in faster-than-real time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from gateway.analog.port import (
    CallerIdReceived,
    LoopCurrentDrop,
    PortState,
    ProgressTone,
    RingingStopped,
    RingOff,
    RingOn,
)
from gateway.analog.sim import LineBusy, LineMode, SimCard, UnknownPort, wav_bytes
from gateway.analog.sim_http import make_control_app
from gateway.dsp import CallerId, DtmfDetector, ProgressToneDetector
from gateway.media.prompts import parse_wav


def tone_share(pcm: np.ndarray, hz: float) -> float:
    """Fraction of the signal energy at ``hz`` (single-bin DFT over the whole signal)."""
    x = pcm.astype(np.float64)
    t = np.arange(x.size) / 8000.0
    c = x @ np.exp(-2j * np.pi * hz * t)
    return float(abs(c) ** 2 * 2.0 / x.size / (x @ x))


async def answered(card: SimCard, k: int) -> list[np.ndarray]:
    """Ring port k, let the first ring pass, answer; returns the list on_audio fills."""
    port = card.port(k)
    heard: list[np.ndarray] = []
    port.on_audio = heard.append
    card.exchange.ring(k, "13800138000")
    card.tick(10)
    await port.off_hook()
    port.drain_events()
    return heard


async def test_ring_delivers_fsk_caller_id_between_rings() -> None:
    card = SimCard(4)
    await card.start()
    port = card.port(2)
    card.exchange.ring(2, "13800138000", "Li Lei", datetime="03141530")
    card.tick(300)  # 6 s: ring, CID, second ring
    it = port.events()
    got = [await asyncio.wait_for(anext(it), 1) for _ in range(4)]
    assert got == [
        RingOn(),
        RingOff(),
        CallerIdReceived(CallerId(number="13800138000", name="Li Lei", datetime="03141530")),
        RingOn(),
    ]
    assert port.state is PortState.RINGING
    assert all(p.drain_events() == [] for p in card.ports if p is not port)
    await card.stop()


async def test_corrupted_caller_id_is_reported_invalid() -> None:
    card = SimCard(2)
    card.exchange.ring(1, "13800138000", corrupt=True)
    card.tick(260)
    cids = [e for e in card.port(1).drain_events() if isinstance(e, CallerIdReceived)]
    assert len(cids) == 1
    assert cids[0].caller_id.valid is False and cids[0].caller_id.number is None


async def test_four_ports_ring_at_once_independently() -> None:
    card = SimCard(4)
    callers = {1: "13800138001", 2: "13800138002", 3: "010-bad", 4: "13800138004"}
    for k, number in callers.items():
        if k == 3:
            card.exchange.ring(k, None)  # number withheld
        else:
            card.exchange.ring(k, number, f"caller {k}")
        card.tick(7)  # staggered starts
    card.tick(260)
    for k in (1, 2, 4):
        cids = [e.caller_id for e in card.port(k).drain_events() if isinstance(e, CallerIdReceived)]
        assert cids == [CallerId(number=callers[k], name=f"caller {k}")]
    cids3 = [e.caller_id for e in card.port(3).drain_events() if isinstance(e, CallerIdReceived)]
    assert cids3 == [CallerId(reason="unavailable")]
    await card.port(1).off_hook()
    card.tick(300)
    assert card.port(1).drain_events() == []  # answered: no more rings
    assert [type(e) for e in card.port(2).drain_events()].count(RingOn) == 1


async def test_unanswered_call_ends_with_ringing_stopped() -> None:
    card = SimCard(1, ring_timeout_ms=6000, ring_on_ms=1000, ring_off_ms=2000)
    card.exchange.ring(1, "123", rings=2)
    card.tick(600)  # last ring ends at 4 s, timeout 6 s later
    evs = card.port(1).drain_events()
    assert [type(e) for e in evs] == [
        RingOn,
        RingOff,
        CallerIdReceived,
        RingOn,
        RingOff,
        RingingStopped,
    ]
    assert card.port(1).state is PortState.IDLE
    assert card.exchange.line(1).mode is LineMode.IDLE


async def test_seizure_gives_dial_tone_and_dialled_digits_reach_the_exchange() -> None:
    card = SimCard(4)
    port = card.port(3)
    heard: list[np.ndarray] = []
    port.on_audio = heard.append
    await port.off_hook()
    card.tick(70)  # dial tone is told from a ringback burst after 1.26 s
    pcm = np.concatenate(heard)
    assert tone_share(pcm, 450.0) > 0.9
    assert ProgressTone("dial") in port.drain_events()
    dial = asyncio.create_task(port.dial("8001"))
    while not dial.done():
        card.tick()
        await asyncio.sleep(0)
    await dial
    card.tick(5)
    line = card.exchange.line(3)
    assert line.dialled == "8001" and line.mode is LineMode.CONNECTED
    sent = card.exchange.captured(3)
    det = DtmfDetector()
    assert [e.digit for e in det.feed(sent)] == list("8001")


async def test_far_end_dtmf_is_heard_and_detected() -> None:
    card = SimCard(4)
    heard = await answered(card, 2)
    card.exchange.dtmf(2, "2")
    card.tick(15)
    det = DtmfDetector()
    assert [e.digit for f in heard for e in det.feed(f)] == ["2"]


async def test_far_end_audio_and_gateway_audio_are_exchanged() -> None:
    card = SimCard(2)
    heard = await answered(card, 1)
    voice = (3000 * np.sin(2 * np.pi * 300 * np.arange(800) / 8000)).astype(np.int16)
    card.exchange.play(1, voice)
    port = card.port(1)
    for i in range(5):
        port.send_audio(np.full(160, i + 1, np.int16))
        card.tick()
    assert np.array_equal(np.concatenate(heard[-5:]), voice)
    cap = card.exchange.captured(1)
    assert cap.size >= 800 and list(cap[-800::160]) == [1, 2, 3, 4, 5]


async def test_far_end_hangup_by_busy_tone() -> None:
    card = SimCard(4)
    heard = await answered(card, 4)
    card.exchange.hangup(4, "busy")
    card.tick(100)
    det = ProgressToneDetector("CN")
    found = {r for f in heard if (r := det.feed(f))}
    assert found == {"busy"}
    assert ProgressTone("busy") in card.port(4).drain_events()
    await card.port(4).on_hook()
    assert card.exchange.line(4).mode is LineMode.IDLE


async def test_far_end_hangup_by_loop_current_drop() -> None:
    card = SimCard(4)
    await answered(card, 1)
    card.exchange.hangup(1, "loop_drop")
    card.tick()
    assert card.port(1).drain_events() == [LoopCurrentDrop()]
    assert card.exchange.line(1).mode is LineMode.DROPPED


async def test_flash_and_bad_requests() -> None:
    card = SimCard(2)
    await answered(card, 1)
    await card.port(1).flash(120)
    assert card.exchange.line(1).flashes == [120]
    with pytest.raises(LineBusy):
        card.exchange.ring(1, "123")
    with pytest.raises(UnknownPort):
        card.exchange.ring(3, "123")
    with pytest.raises(LineBusy):
        card.exchange.hangup(2)
    with pytest.raises(ValueError):
        card.exchange.hangup(1, "scream")
    with pytest.raises(ValueError):
        SimCard(1, ring_on_ms=1010)


async def test_realtime_mode_ticks_on_its_own() -> None:
    card = SimCard(1, realtime=True)
    await card.start()
    card.exchange.ring(1, "123")
    ev = await asyncio.wait_for(anext(card.port(1).events()), 0.5)
    assert ev == RingOn()
    await asyncio.sleep(0.1)
    await card.stop()
    assert card.exchange.now_ms >= 100


# ------------------------------------------------------------------ HTTP control API


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[SimCard, TestClient]]:
    card = SimCard(4)
    client = TestClient(TestServer(make_control_app(card)))
    await client.start_server()
    try:
        yield card, client
    finally:
        await client.close()


async def test_http_ring_then_caller_id_and_port_list(api: tuple[SimCard, TestClient]) -> None:
    card, client = api
    r = await client.post("/ports/2/ring", json={"caller": "13800138000", "name": "Han Meimei"})
    assert r.status == 200 and (await r.json())["line"] == "ringing"
    card.tick(260)
    cids = [e.caller_id for e in card.port(2).drain_events() if isinstance(e, CallerIdReceived)]
    assert cids == [CallerId(number="13800138000", name="Han Meimei")]
    r = await client.get("/ports")
    states = await r.json()
    assert [p["state"] for p in states] == ["idle", "ringing", "idle", "idle"]
    assert states[1]["caller"] == "13800138000"
    r = await client.post("/ports/2/ring", json={"caller": "1"})
    assert r.status == 409


async def test_http_play_dtmf_hangup_and_capture(api: tuple[SimCard, TestClient]) -> None:
    card, client = api
    heard = await answered(card, 1)
    r = await client.post("/ports/1/play", json={"tone_hz": 1000, "ms": 200})
    assert r.status == 200
    voice = (2000 * np.sin(np.arange(1600) * 0.3)).astype(np.int16)
    r = await client.post(
        "/ports/1/play", data=wav_bytes(voice), headers={"Content-Type": "audio/wav"}
    )
    assert r.status == 200
    form = FormData()
    form.add_field("file", wav_bytes(voice[:800]), filename="v.wav", content_type="audio/wav")
    assert (await client.post("/ports/1/play", data=form)).status == 200
    r = await client.post("/ports/1/dtmf", json={"digits": "2"})
    assert r.status == 200
    card.port(1).send_audio(np.full(160, 99, np.int16))
    card.tick(50)
    pcm = np.concatenate(heard)
    assert tone_share(pcm[:1600], 1000.0) > 0.9
    assert np.array_equal(pcm[1600:3200], voice) and np.array_equal(pcm[3200:4000], voice[:800])
    assert [e.digit for e in DtmfDetector().feed(pcm)] == ["2"]
    r = await client.post("/ports/1/hangup", json={"signal": "loop_drop"})
    assert r.status == 200 and (await r.json())["line"] == "dropped"
    assert LoopCurrentDrop() in card.port(1).drain_events()
    r = await client.get("/ports/1/captured")
    assert r.status == 200 and r.content_type == "audio/wav"
    sent = parse_wav(await r.read())
    assert sent.size == 50 * 160 and np.all(sent[:160] == 99)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/ports/1/ring", {"name": "x"}, "caller"),
        ("/ports/1/ring", {"caller": "12ab"}, "caller"),
        ("/ports/1/ring", {"caller": "123", "name": 5}, "name"),
        ("/ports/1/ring", {"caller": "123", "datetime": "tomorrow"}, "datetime"),
        ("/ports/1/ring", {"caller": "123", "rings": 0}, "rings"),
        ("/ports/1/ring", [1, 2], "body"),
        ("/ports/1/play", {"tone_hz": 5, "ms": 100}, "tone_hz"),
        ("/ports/1/play", {"tone_hz": 440, "ms": "long"}, "ms"),
        ("/ports/1/play", {"ms": 100}, "tone_hz"),
        ("/ports/1/dtmf", {"digits": "12x"}, "digits"),
        ("/ports/1/dtmf", {}, "digits"),
        ("/ports/1/dtmf", {"digits": "1", "on_ms": 5}, "on_ms"),
        ("/ports/1/hangup", {"signal": "scream"}, "signal"),
    ],
)
async def test_http_bad_input_is_400_naming_the_field(
    api: tuple[SimCard, TestClient], path: str, body: object, field: str
) -> None:
    _, client = api
    r = await client.post(path, json=body)
    assert r.status == 400
    assert (await r.json())["error"].startswith(f"{field}:")


async def test_http_bad_wav_unknown_port_and_conflicts(api: tuple[SimCard, TestClient]) -> None:
    _, client = api
    r = await client.post("/ports/1/play", data=b"not a wav", headers={"Content-Type": "audio/wav"})
    assert r.status == 400 and (await r.json())["error"].startswith("wav:")
    r = await client.post(
        "/ports/1/ring", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert r.status == 400 and (await r.json())["error"].startswith("body:")
    for path in ("/ports/5/ring", "/ports/0/dtmf", "/ports/x/hangup"):
        assert (await client.post(path, json={"caller": "1", "digits": "1"})).status == 404
    assert (await client.get("/ports/9/captured")).status == 404
    assert (await client.post("/ports/3/hangup")).status == 409  # nothing to hang up
