"""DAHDI driver against a fake device: a SEQPACKET socketpair per channel + an ioctl recorder."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque

import numpy as np
import pytest

from gateway.analog.dahdi import (
    DAHDI_AUDIOMODE,
    DAHDI_FLUSH,
    DAHDI_GETEVENT,
    DAHDI_HOOK,
    DAHDI_SET_BLOCKSIZE,
    DAHDI_SETLAW,
    DAHDI_SPECIFY,
    ELAST,
    DahdiCard,
    event_name,
    ioc,
)
from gateway.analog.port import (
    Alarm,
    CallerIdReceived,
    LoopCurrentDrop,
    PolarityReversal,
    PortError,
    PortState,
    RingOff,
    RingOn,
)
from gateway.dsp import CallerId, DtmfDetector, encode_callerid_fsk
from gateway.dsp.tones import dial_digits
from gateway.media.g711 import alaw_decode, alaw_encode, ulaw_encode

SILENCE = alaw_encode(np.zeros(160, np.int16))


class FakeDahdi:
    """Stands in for ``os`` + ``ioctl`` on /dev/dahdi/channel: audio over a socketpair,
    events queued per channel and announced the DAHDI way (read fails with ELAST)."""

    def __init__(self, fail_open: int | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.dev: dict[int, socket.socket] = {}
        self.events: dict[int, deque[int]] = {}
        self.fail_open = fail_open

    def open(self, path: str, flags: int) -> int:
        self.calls.append(("open", path, flags))
        if self.fail_open is not None:
            raise OSError(self.fail_open, os.strerror(self.fail_open))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        fd = ours.detach()
        self.dev[fd] = theirs
        self.events[fd] = deque()
        return fd

    def close(self, fd: int) -> None:
        self.calls.append(("close", fd))
        os.close(fd)
        self.dev.pop(fd).close()

    def read(self, fd: int, n: int) -> bytes:
        if self.events[fd]:
            raise OSError(ELAST, "DAHDI event pending")
        return os.read(fd, n)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def ioctl_int(self, fd: int, request: int, value: int = 0) -> int:
        self.calls.append(("ioctl", fd, request, value))
        if request == DAHDI_GETEVENT:
            return self.events[fd].popleft() if self.events[fd] else 0
        return value

    # ---- the card's side
    def fd_of(self, channel: int) -> int:
        return next(
            c[1]
            for c in self.calls
            if c[0] == "ioctl" and c[2] == DAHDI_SPECIFY and c[3] == channel
        )

    def event(self, fd: int, code: int) -> None:
        self.events[fd].append(code)
        self.dev[fd].send(SILENCE)  # audio keeps flowing; the next read reports the event

    def audio(self, fd: int, pcm: np.ndarray) -> None:
        n = -(-pcm.size // 160) * 160
        buf = np.zeros(n, np.int16)
        buf[: pcm.size] = pcm
        for k in range(0, n, 160):
            self.dev[fd].send(alaw_encode(buf[k : k + 160]))

    def received(self, fd: int) -> bytes:
        self.dev[fd].setblocking(False)
        out = b""
        while True:
            try:
                out += self.dev[fd].recv(4096)
            except BlockingIOError:
                return out

    def ioctls(self, fd: int) -> list[tuple[int, int]]:
        return [
            (c[2], c[3])
            for c in self.calls
            if c[0] == "ioctl" and c[1] == fd and c[2] != DAHDI_GETEVENT
        ]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.002)


def test_ioctl_numbers_match_the_linux_ioc_encoding() -> None:
    assert ioc(1, 0xDA, 38, 4) == 0x4004DA26
    assert DAHDI_SPECIFY == 0x4004DA26
    assert DAHDI_SET_BLOCKSIZE == 0x4004DA01
    assert DAHDI_HOOK == 0x4004DA07
    assert DAHDI_GETEVENT == 0x8004DA08
    assert DAHDI_SETLAW == 0x4004DA27
    assert DAHDI_AUDIOMODE == 0x4004DA20
    assert DAHDI_FLUSH == 0x4004DA03


def test_event_names() -> None:
    assert event_name(2) == "RINGOFFHOOK" and event_name(17) == "POLARITY"
    assert event_name((1 << 17) | ord("5")) == "DIGIT('5')"
    assert event_name(99) == "UNKNOWN(99)"


async def test_open_offhook_onhook_flash_ioctl_sequence() -> None:
    dev = FakeDahdi()
    card = DahdiCard([3, 4], law="alaw", osif=dev)
    await card.start()
    fd = dev.fd_of(3)
    assert dev.calls[0] == ("open", "/dev/dahdi/channel", os.O_RDWR | os.O_NONBLOCK)
    assert dev.ioctls(fd) == [
        (DAHDI_SPECIFY, 3),
        (DAHDI_SET_BLOCKSIZE, 160),
        (DAHDI_SETLAW, 2),
        (DAHDI_AUDIOMODE, 1),
        (DAHDI_FLUSH, 3),
    ]
    port = card.ports[0]
    await port.off_hook()
    await port.flash(20)
    await port.on_hook()
    assert dev.ioctls(fd)[5:] == [(DAHDI_HOOK, 1), (DAHDI_HOOK, 3), (DAHDI_HOOK, 0)]
    await card.stop()
    assert ("close", fd) in dev.calls and ("close", dev.fd_of(4)) in dev.calls


async def test_ring_events_and_caller_id_from_line_audio() -> None:
    dev = FakeDahdi()
    card = DahdiCard([1], osif=dev)
    await card.start()
    fd, port = dev.fd_of(1), card.ports[0]
    dev.event(fd, 18)  # RINGBEGIN
    dev.event(fd, 2)  # RINGOFFHOOK (debounced ring): same burst
    await settle()
    dev.event(fd, 11)  # RINGEROFF
    await settle()
    dev.audio(fd, encode_callerid_fsk(CallerId(number="13800138000")))
    dev.audio(fd, np.zeros(800, np.int16))
    await settle()
    assert port.state is PortState.RINGING
    assert port.drain_events() == [
        RingOn(),
        RingOff(),
        CallerIdReceived(CallerId(number="13800138000")),
    ]
    await card.stop()


async def test_offhook_audio_both_ways_and_supervision_events() -> None:
    dev = FakeDahdi()
    card = DahdiCard([2], law="alaw", osif=dev)
    await card.start()
    fd, port = dev.fd_of(2), card.ports[0]
    heard: list[np.ndarray] = []
    port.on_audio = heard.append
    await port.off_hook()
    dev.audio(fd, dial_digits("5"))
    await settle()
    assert [e.digit for e in DtmfDetector().feed(np.concatenate(heard))] == ["5"]
    frame = (np.arange(160) * 50 - 4000).astype(np.int16)
    port.send_audio(frame)
    got = dev.received(fd)
    assert got == alaw_encode(frame) and np.allclose(alaw_decode(got), frame, atol=130)
    for code in (17, 4, 5, 1):  # POLARITY, ALARM, NOALARM, ONHOOK (loop current lost)
        dev.event(fd, code)
        await settle()
    assert port.drain_events() == [PolarityReversal(), Alarm(True), Alarm(False), LoopCurrentDrop()]
    await card.stop()
    assert port.state is PortState.IDLE


async def test_ulaw_channel_and_dial_goes_out_as_g711() -> None:
    dev = FakeDahdi()
    card = DahdiCard([7], law="ulaw", osif=dev)
    await card.start()
    fd, port = dev.fd_of(7), card.ports[0]
    assert (DAHDI_SETLAW, 1) in dev.ioctls(fd)
    await port.off_hook()
    task = asyncio.create_task(port.dial("9"))
    while not task.done():  # each received block paces one transmitted block
        dev.audio(fd, np.zeros(160, np.int16))
        await settle()
    sent = dev.received(fd)
    assert len(sent) == 10 * 160
    expected = dial_digits("9")
    assert sent[:1600] == ulaw_encode(expected)
    await card.stop()


async def test_open_failure_names_the_cause() -> None:
    card = DahdiCard([1], osif=FakeDahdi(fail_open=13))
    with pytest.raises(PortError, match="permissions"):
        await card.start()
    with pytest.raises(ValueError):
        DahdiCard([])
