"""Linux DAHDI userspace driver for FXO ports (Digium/Sangoma/OpenVox analog cards).

Each port opens ``/dev/dahdi/channel``, binds it to its DAHDI channel number with
DAHDI_SPECIFY, asks for 160-byte (20 ms) blocks and a fixed G.711 law, and then
lives on the event loop: the file descriptor is readable every 20 ms with one
block of line audio (also on-hook, which carries the FSK caller ID between rings).
DAHDI reports a pending signalling event by failing ``read`` with errno ELAST
(500); the port then drains DAHDI_GETEVENT until it returns DAHDI_EVENT_NONE.

The ioctl numbers are computed from DAHDI's ``include/dahdi/user.h`` definitions
with the Linux ``_IOC`` encoding (table and sources in docs/analog-cards.md).
All device access goes through a :class:`DeviceOs` object so the unit tests run
the driver against a fake device (a socketpair plus an ioctl recorder).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import struct
from typing import Protocol

import numpy as np

from gateway.media.audio import FRAME_SAMPLES
from gateway.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

from .port import BasePort, FxoPort, PortError

__all__ = [
    "DAHDI_AUDIOMODE",
    "DAHDI_CODE",
    "DAHDI_GETEVENT",
    "DAHDI_HOOK",
    "DAHDI_SETLAW",
    "DAHDI_SET_BLOCKSIZE",
    "DAHDI_SPECIFY",
    "DahdiCard",
    "DahdiPort",
    "DeviceOs",
    "RealDeviceOs",
    "event_name",
    "ioc",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- ioctl encoding
# Linux asm-generic/ioctl.h: nr bits 0-7, type bits 8-15, size bits 16-29, dir bits 30-31.
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
_SIZEOF_INT = 4


def ioc(direction: int, kind: int, nr: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)`` as in the Linux headers (x86, ARM, RISC-V layout)."""
    return (direction << 30) | (size << 16) | (kind << 8) | nr


def _iow(nr: int) -> int:
    return ioc(_IOC_WRITE, DAHDI_CODE, nr, _SIZEOF_INT)


def _ior(nr: int) -> int:
    return ioc(_IOC_READ, DAHDI_CODE, nr, _SIZEOF_INT)


DAHDI_CODE = 0xDA
DAHDI_SET_BLOCKSIZE = _iow(1)  # _IOW(DAHDI_CODE, 1, int)
DAHDI_FLUSH = _iow(3)  # _IOW(DAHDI_CODE, 3, int)
DAHDI_HOOK = _iow(7)  # _IOW(DAHDI_CODE, 7, int)
DAHDI_GETEVENT = _ior(8)  # _IOR(DAHDI_CODE, 8, int)
DAHDI_AUDIOMODE = _iow(32)  # _IOW(DAHDI_CODE, 32, int)
DAHDI_SPECIFY = _iow(38)  # _IOW(DAHDI_CODE, 38, int)
DAHDI_SETLAW = _iow(39)  # _IOW(DAHDI_CODE, 39, int)

# Values (user.h).
DAHDI_ONHOOK, DAHDI_OFFHOOK, DAHDI_FLASH = 0, 1, 3
DAHDI_LAW_MULAW, DAHDI_LAW_ALAW = 1, 2
DAHDI_FLUSH_BOTH = 3  # DAHDI_FLUSH_READ | DAHDI_FLUSH_WRITE
ELAST = 500  # DAHDI's "an event is pending" errno (user.h: #define ELAST 500)

EVENT_NAMES: dict[int, str] = {
    0: "NONE",
    1: "ONHOOK",
    2: "RINGOFFHOOK",
    3: "WINKFLASH",
    4: "ALARM",
    5: "NOALARM",
    9: "DIALCOMPLETE",
    10: "RINGERON",
    11: "RINGEROFF",
    12: "HOOKCOMPLETE",
    13: "BITSCHANGED",
    14: "PULSE_START",
    17: "POLARITY",
    18: "RINGBEGIN",
    19: "EC_DISABLED",
    20: "REMOVED",
}
EV_NONE, EV_ONHOOK, EV_RINGOFFHOOK, EV_ALARM, EV_NOALARM = 0, 1, 2, 4, 5
EV_RINGEROFF, EV_HOOKCOMPLETE, EV_POLARITY, EV_RINGBEGIN, EV_REMOVED = 11, 12, 17, 18, 20
_DIGIT_FLAGS = (1 << 16) | (1 << 17) | (1 << 18)  # PULSEDIGIT, DTMFDOWN, DTMFUP | digit

BLOCK = FRAME_SAMPLES  # bytes per 20 ms G.711 block (one byte per sample)
DEVICE = "/dev/dahdi/channel"


def event_name(code: int) -> str:
    """Readable name of a DAHDI_GETEVENT result, for logs."""
    if code & _DIGIT_FLAGS:
        return f"DIGIT({chr(code & 0xFFFF)!r})"
    return EVENT_NAMES.get(code, f"UNKNOWN({code})")


# ---------------------------------------------------------------- device access
class DeviceOs(Protocol):
    """The slice of ``os`` + ``fcntl.ioctl`` the driver needs (fakeable in tests)."""

    def open(self, path: str, flags: int) -> int: ...

    def close(self, fd: int) -> None: ...

    def read(self, fd: int, n: int) -> bytes: ...

    def write(self, fd: int, data: bytes) -> int: ...

    def ioctl_int(self, fd: int, request: int, value: int = 0) -> int:
        """ioctl with a pointer to one C ``int``; returns the int after the call."""
        ...


class RealDeviceOs:
    """The real thing: :mod:`os` and :func:`fcntl.ioctl`."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read(self, fd: int, n: int) -> bytes:
        return os.read(fd, n)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def ioctl_int(self, fd: int, request: int, value: int = 0) -> int:
        buf = bytearray(struct.pack("i", value))
        fcntl.ioctl(fd, request, buf, True)
        return int(struct.unpack("i", buf)[0])


# ---------------------------------------------------------------------- the port
class DahdiPort(BasePort):
    """One FXO port = one DAHDI channel (configured ``fxsks``/``fxsls`` in system.conf)."""

    def __init__(
        self,
        index: int,
        channel: int,
        *,
        law: str = "alaw",
        osif: DeviceOs | None = None,
        device: str = DEVICE,
        **kw: object,
    ) -> None:
        super().__init__(index, **kw)  # type: ignore[arg-type]
        if law not in ("alaw", "ulaw"):
            raise ValueError(f"law must be 'alaw' or 'ulaw', got {law!r}")
        self.channel = channel
        self.law = law
        self._os: DeviceOs = osif or RealDeviceOs()
        self._device = device
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._decode = alaw_decode if law == "alaw" else ulaw_decode
        self._encode = alaw_encode if law == "alaw" else ulaw_encode
        self._rx = bytearray()
        self.write_drops = 0

    # --------------------------------------------------------------- lifecycle
    def open(self) -> None:
        """Open and configure the channel and start reading on the running loop."""
        if self._fd is not None:
            return
        try:
            fd = self._os.open(self._device, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            raise PortError(
                f"port {self.index}: cannot open {self._device}: "
                f"{exc.strerror or exc} (dahdi modules loaded? device "
                f"permissions?)"
            ) from exc
        try:
            self._os.ioctl_int(fd, DAHDI_SPECIFY, self.channel)
            self._os.ioctl_int(fd, DAHDI_SET_BLOCKSIZE, BLOCK)
            self._os.ioctl_int(
                fd, DAHDI_SETLAW, DAHDI_LAW_ALAW if self.law == "alaw" else DAHDI_LAW_MULAW
            )
            self._os.ioctl_int(fd, DAHDI_AUDIOMODE, 1)
            self._os.ioctl_int(fd, DAHDI_FLUSH, DAHDI_FLUSH_BOTH)
        except OSError as exc:
            self._os.close(fd)
            raise PortError(
                f"port {self.index}: DAHDI channel {self.channel} setup failed: "
                f"{exc.strerror or exc} (configured by dahdi_cfg?)"
            ) from exc
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    def close(self) -> None:
        """Stop reading, release the device and end the event stream."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            try:
                self._os.ioctl_int(fd, DAHDI_HOOK, DAHDI_ONHOOK)
            except OSError:
                pass  # closing hangs up anyway
            self._os.close(fd)
            self._cancel_dial(PortError(f"port {self.index} closed"))
            self._onhook_done()
        self._close_events()

    # ------------------------------------------------------------------- reading
    def _on_readable(self) -> None:
        fd = self._fd
        while fd is not None and fd == self._fd:
            try:
                data = self._os.read(fd, BLOCK)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == ELAST:
                    self._drain_events()
                    continue
                if exc.errno == errno.EINTR:
                    continue
                log.error("port %d: read failed: %s", self.index, exc)
                self._alarm(True)
                return
            if not data:
                return
            self._rx.extend(data)
            while len(self._rx) >= BLOCK:
                block = bytes(self._rx[:BLOCK])
                del self._rx[:BLOCK]
                self._line_frame(self._decode(block))

    def _drain_events(self) -> None:
        fd = self._fd
        for _ in range(64):  # DAHDI_MAX_EVENTSIZE: never loop forever on a broken device
            if fd is None:
                return
            code = self._os.ioctl_int(fd, DAHDI_GETEVENT)
            if code == EV_NONE:
                return
            self._handle_event(code)

    def _handle_event(self, code: int) -> None:
        """Map a DAHDI event to the port's signalling (FXO: channel uses FXS signalling)."""
        log.debug("port %d (chan %d): %s", self.index, self.channel, event_name(code))
        if code in (EV_RINGBEGIN, EV_RINGOFFHOOK):
            self._ring_on()  # RINGOFFHOOK on-hook = debounced ring; off-hook it is ignored
        elif code == EV_RINGEROFF:
            self._ring_off()
        elif code == EV_ONHOOK:
            self._loop_drop()  # battery / loop current lost while we hold the line
        elif code == EV_POLARITY:
            self._polarity()
        elif code in (EV_ALARM, EV_REMOVED):
            self._alarm(True)
        elif code == EV_NOALARM:
            self._alarm(False)
        # HOOKCOMPLETE, WINKFLASH, DIALCOMPLETE, digit events: nothing to do.

    # --------------------------------------------------------------- hardware
    def _require_fd(self) -> int:
        if self._fd is None:
            raise PortError(f"port {self.index} is not open")
        return self._fd

    async def _hw_hook(self, off: bool) -> None:
        fd = self._require_fd()
        try:
            self._os.ioctl_int(fd, DAHDI_HOOK, DAHDI_OFFHOOK if off else DAHDI_ONHOOK)
        except OSError as exc:
            raise PortError(f"port {self.index}: hook change failed: {exc}") from exc

    async def _hw_flash(self, ms: int) -> None:
        # The flash length is the channel's flashtime (DAHDI params), not ``ms``;
        # we only wait that long so the caller resumes after the flash.
        fd = self._require_fd()
        try:
            self._os.ioctl_int(fd, DAHDI_HOOK, DAHDI_FLASH)
        except OSError as exc:
            raise PortError(f"port {self.index}: flash failed: {exc}") from exc
        await asyncio.sleep(ms / 1000.0)

    def _hw_send(self, frame: np.ndarray) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            self._os.write(fd, self._encode(frame))
        except BlockingIOError:
            self.write_drops += 1  # DAHDI's write buffers are full: drop, never block
        except OSError as exc:
            if exc.errno != ELAST:  # ELAST: event pending; the reader picks it up
                log.warning("port %d: write failed: %s", self.index, exc)
            self.write_drops += 1


class DahdiCard:
    """The FXO ports of a DAHDI card; ``channels[i]`` is the DAHDI channel of port i+1."""

    def __init__(
        self,
        channels: list[int],
        *,
        law: str = "alaw",
        osif: DeviceOs | None = None,
        device: str = DEVICE,
        **port_options: object,
    ) -> None:
        if not channels:
            raise ValueError("at least one DAHDI channel is needed")
        self.dahdi_ports = [
            DahdiPort(k, ch, law=law, osif=osif, device=device, **port_options)
            for k, ch in enumerate(channels, start=1)
        ]
        self.ports: list[FxoPort] = list(self.dahdi_ports)

    async def start(self) -> None:
        """Open every channel; if one fails, release the ones already opened."""
        try:
            for p in self.dahdi_ports:
                p.open()
        except PortError:
            for p in self.dahdi_ports:
                p.close()
            raise

    async def stop(self) -> None:
        """Hang up and close every channel."""
        for p in self.dahdi_ports:
            p.close()
