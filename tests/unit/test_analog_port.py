"""The shared FXO port logic: caller-ID window, ring state machine, dial pacing, supervision."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.analog.port import (
    Alarm,
    BasePort,
    CallerIdCollector,
    CallerIdReceived,
    FxoPort,
    HookState,
    LoopCurrentDrop,
    PortError,
    PortState,
    ProgressTone,
    RingingStopped,
    RingOff,
    RingOn,
)
from gateway.dsp import CallerId, DtmfDetector, encode_callerid_fsk
from gateway.dsp.callerid import build_message
from gateway.dsp.progress import CHINA

ZERO = np.zeros(160, dtype=np.int16)


def chunks(pcm: np.ndarray) -> list[np.ndarray]:
    n = -(-pcm.size // 160)
    buf = np.zeros(n * 160, dtype=np.int16)
    buf[: pcm.size] = pcm
    return list(buf.reshape(n, 160))


class LoopbackPort(BasePort):
    """A port whose 'hardware' records what it was told (test double of a driver)."""

    def __init__(self, index: int = 1, **kw: object) -> None:
        super().__init__(index, **kw)  # type: ignore[arg-type]
        self.hooks: list[bool] = []
        self.flashes: list[int] = []
        self.sent: list[np.ndarray] = []

    async def _hw_hook(self, off: bool) -> None:
        self.hooks.append(off)

    async def _hw_flash(self, ms: int) -> None:
        self.flashes.append(ms)

    def _hw_send(self, frame: np.ndarray) -> None:
        self.sent.append(frame)


def test_collector_only_listens_between_first_and_second_ring() -> None:
    cid = CallerId(number="13800138000", name="Zhang")
    fsk = chunks(encode_callerid_fsk(cid))
    col = CallerIdCollector()
    assert all(col.feed(f) is None for f in fsk)  # before any ring: ignored
    col.ring_on()
    col.ring_off()
    got = [r for f in fsk + [ZERO] * 5 if (r := col.feed(f)) is not None]
    assert got == [CallerId(number="13800138000", name="Zhang")]
    assert col.done
    assert all(col.feed(f) is None for f in fsk)  # once per call
    col.ring_on()
    col.ring_off()
    assert all(col.feed(f) is None for f in fsk)


def test_collector_reports_corrupted_message_as_invalid() -> None:
    msg = bytearray(build_message(CallerId(number="13800138000")))
    msg[5] ^= 0x01
    fsk = chunks(encode_callerid_fsk(CallerId(), message=bytes(msg)))
    col = CallerIdCollector()
    col.ring_on()
    col.ring_off()
    got = [r for f in fsk + [ZERO] * 5 if (r := col.feed(f)) is not None]
    assert len(got) == 1 and got[0].valid is False and got[0].number is None


async def test_ring_cycle_events_and_state() -> None:
    port = LoopbackPort()
    assert isinstance(port, FxoPort)
    assert port.state is PortState.IDLE and port.hook_state is HookState.ONHOOK
    port._ring_on()
    port._ring_on()  # duplicate report of the same burst
    assert port.state is PortState.RINGING
    for f in chunks(encode_callerid_fsk(CallerId(number="110"))):
        port._line_frame(f)  # during the burst: not the CID window
    port._ring_off()
    for f in chunks(encode_callerid_fsk(CallerId(number="110"))) + [ZERO] * 3:
        port._line_frame(f)
    port._ring_on()
    evs = port.drain_events()
    assert evs == [RingOn(), RingOff(), CallerIdReceived(CallerId(number="110")), RingOn()]
    await port.off_hook()
    port._ring_off()  # ring trip: no RingOff after answering
    assert port.state is PortState.OFFHOOK and port.hooks == [True]
    assert port.drain_events() == []


async def test_unanswered_ringing_times_out() -> None:
    port = LoopbackPort(ring_timeout_ms=1000)
    port._ring_on()
    port._ring_off()
    for _ in range(51):
        port._line_frame(ZERO)
    assert port.state is PortState.IDLE
    assert port.drain_events() == [RingOn(), RingOff(), RingingStopped()]


async def test_events_iterator_ends_when_closed() -> None:
    port = LoopbackPort()
    port._ring_on()
    port._close_events()
    got = [ev async for ev in port.events()]
    assert got == [RingOn()]


async def test_dial_is_paced_one_frame_per_received_frame_and_detectable() -> None:
    port = LoopbackPort()
    await port.off_hook()
    task = asyncio.create_task(port.dial("2#"))
    await asyncio.sleep(0)
    port.send_audio(np.full(160, 1000, np.int16))  # dropped while dialling
    frames = 0
    while not task.done():
        port._line_frame(ZERO)
        frames += 1
        await asyncio.sleep(0)
    await task
    assert frames == 20  # 2 x (100 ms tone + 100 ms gap) = 20 frames
    det = DtmfDetector()
    digits = [e.digit for f in port.sent for e in det.feed(f)]
    assert digits == ["2", "#"]
    port.send_audio(np.full(160, 7, np.int16))
    assert port.sent[-1][0] == 7


async def test_dial_needs_offhook_and_valid_digits() -> None:
    port = LoopbackPort()
    with pytest.raises(PortError):
        await port.dial("1")
    await port.off_hook()
    with pytest.raises(ValueError, match="digits"):
        await port.dial("1x")


async def test_on_hook_abandons_dialling() -> None:
    port = LoopbackPort()
    await port.off_hook()
    task = asyncio.create_task(port.dial("123"))
    await asyncio.sleep(0)
    await port.on_hook()
    with pytest.raises(PortError):
        await task
    assert port.state is PortState.IDLE and port.hooks == [True, False]


async def test_offhook_audio_goes_to_on_audio_and_busy_is_recognised() -> None:
    port = LoopbackPort()
    heard: list[np.ndarray] = []
    port.on_audio = heard.append
    port._line_frame(np.full(160, 5, np.int16))  # on-hook, not ringing: not delivered
    await port.off_hook()
    for f in chunks(CHINA.generate("busy", 2000)):
        port._line_frame(f)
    assert len(heard) == 100
    assert ProgressTone("busy") in port.drain_events()


async def test_loop_drop_alarm_and_flash() -> None:
    port = LoopbackPort()
    port._loop_drop()  # on-hook: nothing to drop
    with pytest.raises(PortError):
        await port.flash()
    await port.off_hook()
    await port.flash(90)
    port._loop_drop()
    port._alarm(True)
    assert port.state is PortState.OUT_OF_SERVICE
    port._alarm(False)
    assert port.state is PortState.OFFHOOK
    await port.on_hook()
    port._alarm(True)
    with pytest.raises(PortError):
        await port.off_hook()
    assert port.flashes == [90]
    assert port.drain_events() == [LoopCurrentDrop(), Alarm(True), Alarm(False), Alarm(True)]
