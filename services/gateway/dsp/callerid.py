"""On-hook caller ID: FSK (ITU-T V.23 / Bell 202) and DTMF (CLIP-DTMF) formats.

FSK transmission (ETSI ES 200 778-1, Telcordia GR-30-CORE, China YDN 069):
channel seizure (~300 bits of alternating 0/1), ~180 mark bits, then the
message in asynchronous 8N1 bytes at 1200 baud: type, length, payload,
checksum (two's complement of the byte sum, so all bytes sum to 0 mod 256).

* SDMF (type 0x04): ``MMDDHHMM`` + number, or ``O``/``P`` instead of the number.
* MDMF (type 0x80): parameters ``type, length, value``: 0x01 date/time,
  0x02 number, 0x04 number-absent reason, 0x07 name, 0x08 name-absent reason.

The decoder never returns a number it could not verify: any framing error,
lost carrier mid-message or checksum mismatch yields
``CallerId(number=None, reason="unavailable", valid=False)``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from gateway.media.audio import SAMPLE_RATE

from .dtmf import DtmfEvent
from .levels import db_to_amplitude, to_int16

__all__ = [
    "BAUD",
    "FSK_STANDARDS",
    "CallerId",
    "CallerIdError",
    "DtmfCallerIdParser",
    "FskCallerIdDecoder",
    "build_message",
    "checksum",
    "dtmf_callerid_digits",
    "encode_callerid_fsk",
    "parse_message",
]

BAUD = 1200
#: standard -> (mark "1" Hz, space "0" Hz)
FSK_STANDARDS: dict[str, tuple[float, float]] = {
    "v23": (1300.0, 2100.0),  # ITU-T V.23 mode 2 (ETSI / China)
    "bell202": (1200.0, 2200.0),  # Bell 202 (Telcordia GR-30)
}

MSG_SDMF = 0x04
MSG_MDMF = 0x80
P_DATETIME, P_NUMBER, P_NUMBER_ABSENT, P_NAME, P_NAME_ABSENT = 0x01, 0x02, 0x04, 0x07, 0x08
_REASON_CODE = {"private": "P", "unavailable": "O"}
_CODE_REASON = {"P": "private", "O": "unavailable"}
_TEXT = "latin-1"  # IA5/ASCII in practice; latin-1 keeps every byte decodable
_DIAL_CHARS = frozenset("0123456789+*#")


class CallerIdError(ValueError):
    """A caller-ID message that cannot be trusted (checksum, framing, format)."""


@dataclass(frozen=True, slots=True)
class CallerId:
    """Decoded caller identity; ``valid`` is False when the message was corrupted.

    ``datetime`` is the raw ``MMDDHHMM`` string; ``reason`` is why the number is
    absent ("private" / "unavailable"), ``name_reason`` likewise for the name.
    """

    number: str | None = None
    name: str | None = None
    datetime: str | None = None
    reason: str | None = None
    valid: bool = True
    name_reason: str | None = None


INVALID = CallerId(number=None, reason="unavailable", valid=False)


# ------------------------------------------------------------------ message
def checksum(body: bytes) -> int:
    """Two's complement of the mod-256 sum, so body + checksum sums to zero."""
    return (-sum(body)) & 0xFF


def _text(value: str, what: str) -> bytes:
    try:
        data = value.encode(_TEXT)
    except UnicodeEncodeError as exc:
        raise CallerIdError(f"{what} not encodable: {value!r}") from exc
    if not data or len(data) > 255:
        raise CallerIdError(f"{what} length {len(data)} out of range")
    return data


def _datetime(value: str) -> bytes:
    if len(value) != 8 or not value.isdigit():
        raise CallerIdError(f"date/time must be MMDDHHMM, got {value!r}")
    return value.encode("ascii")


def build_message(cid: CallerId, fmt: str = "mdmf") -> bytes:
    """Serialise ``cid`` as an SDMF or MDMF message including the checksum byte."""
    if fmt == "sdmf":
        if cid.datetime is None:
            raise CallerIdError("SDMF requires a date/time")
        who = (
            _check_number(_text(cid.number, "number")).encode("ascii")
            if cid.number
            else _REASON_CODE.get(cid.reason or "unavailable", "O").encode("ascii")
        )
        body = _datetime(cid.datetime) + who
        msg_type = MSG_SDMF
    elif fmt == "mdmf":
        params = bytearray()

        def add(ptype: int, value: bytes) -> None:
            params.extend((ptype, len(value)))
            params.extend(value)

        if cid.datetime is not None:
            add(P_DATETIME, _datetime(cid.datetime))
        if cid.number:
            add(P_NUMBER, _check_number(_text(cid.number, "number")).encode("ascii"))
        else:
            add(P_NUMBER_ABSENT, _REASON_CODE.get(cid.reason or "unavailable", "O").encode("ascii"))
        if cid.name:
            add(P_NAME, _text(cid.name, "name"))
        elif cid.name_reason:
            add(P_NAME_ABSENT, _REASON_CODE.get(cid.name_reason, "O").encode("ascii"))
        body = bytes(params)
        msg_type = MSG_MDMF
    else:
        raise ValueError(f"unknown format {fmt!r} (use 'mdmf' or 'sdmf')")
    if len(body) > 255:
        raise CallerIdError("message too long")
    head = bytes((msg_type, len(body))) + body
    return head + bytes((checksum(head),))


def _check_datetime(raw: bytes) -> str:
    s = raw.decode(_TEXT)
    if len(s) != 8 or not s.isdigit():
        raise CallerIdError(f"bad date/time field {s!r}")
    return s


def _check_printable(raw: bytes, what: str) -> str:
    s = raw.decode(_TEXT)
    if not s or not s.isprintable():
        raise CallerIdError(f"bad {what} field {s!r}")
    return s


def _check_number(raw: bytes) -> str:
    """Numbers are dial characters only: one more guard against a corrupted message."""
    s = raw.decode(_TEXT)
    if not s or any(ch not in _DIAL_CHARS for ch in s):
        raise CallerIdError(f"bad number field {s!r}")
    return s


def parse_message(data: bytes) -> CallerId:
    """Parse one SDMF/MDMF message (type..checksum); raise CallerIdError if untrustworthy."""
    if len(data) < 3:
        raise CallerIdError("message too short")
    if data[1] != len(data) - 3:
        raise CallerIdError(f"length byte {data[1]} does not match {len(data) - 3} payload bytes")
    if sum(data) & 0xFF:
        raise CallerIdError("checksum mismatch")
    body = data[2:-1]
    if data[0] == MSG_SDMF:
        if len(body) < 9:
            raise CallerIdError("SDMF payload too short")
        when = _check_datetime(body[:8])
        who = body[8:].decode(_TEXT)
        if who in _CODE_REASON:
            return CallerId(datetime=when, reason=_CODE_REASON[who])
        return CallerId(number=_check_number(body[8:]), datetime=when)
    if data[0] != MSG_MDMF:
        raise CallerIdError(f"unsupported message type 0x{data[0]:02x}")
    fields: dict[str, str | None] = {
        "number": None,
        "name": None,
        "datetime": None,
        "reason": None,
        "name_reason": None,
    }
    i = 0
    while i < len(body):
        if i + 2 > len(body) or i + 2 + body[i + 1] > len(body):
            raise CallerIdError("MDMF parameter overruns message")
        ptype, value = body[i], body[i + 2 : i + 2 + body[i + 1]]
        i += 2 + body[i + 1]
        if ptype == P_DATETIME:
            fields["datetime"] = _check_datetime(value)
        elif ptype == P_NUMBER:
            fields["number"] = _check_number(value)
        elif ptype == P_NUMBER_ABSENT:
            fields["reason"] = _CODE_REASON.get(value.decode(_TEXT), "unavailable")
        elif ptype == P_NAME:
            fields["name"] = _check_printable(value, "name")
        elif ptype == P_NAME_ABSENT:
            fields["name_reason"] = _CODE_REASON.get(value.decode(_TEXT), "unavailable")
        # Other parameter types (call type, redirection, ...) are skipped on purpose.
    if fields["number"] is None and fields["reason"] is None:
        fields["reason"] = "unavailable"
    return CallerId(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ encoder
def _bits_for(message: bytes, seizure_bits: int, mark_bits: int) -> np.ndarray:
    bits: list[int] = [i & 1 for i in range(seizure_bits)]  # 0101...
    bits += [1] * mark_bits
    for byte in message:
        bits.append(0)  # start
        bits += [(byte >> k) & 1 for k in range(8)]  # LSB first
        bits.append(1)  # stop
    return np.array(bits, dtype=np.int8)


def encode_callerid_fsk(
    cid: CallerId,
    standard: str = "v23",
    level_dbm0: float = -13.5,
    fmt: str = "mdmf",
    seizure_bits: int = 300,
    mark_bits: int = 180,
    message: bytes | None = None,
) -> np.ndarray:
    """Phase-continuous 1200-baud FSK burst (seizure + mark + message) as int16 PCM.

    ``message`` overrides the bytes built from ``cid`` (tests use it to send
    deliberately corrupted messages). Bit edges fall on exact 1/1200 s
    boundaries even though 8000/1200 is not an integer.
    """
    if standard not in FSK_STANDARDS:
        raise ValueError(f"unknown FSK standard {standard!r}")
    mark, space = FSK_STANDARDS[standard]
    msg = build_message(cid, fmt) if message is None else message
    bits = _bits_for(msg, seizure_bits, mark_bits)
    n = int(np.ceil(bits.size * SAMPLE_RATE / BAUD))
    idx = np.minimum((np.arange(n) * BAUD) // SAMPLE_RATE, bits.size - 1)
    freq = np.where(bits[idx] == 1, mark, space)
    phase = np.cumsum(2.0 * np.pi * freq / SAMPLE_RATE) - 2.0 * np.pi * freq[0] / SAMPLE_RATE
    return to_int16(db_to_amplitude(level_dbm0) * np.sin(phase))


# ------------------------------------------------------------------ decoder
def _lowpass(taps: int, cutoff_hz: float) -> np.ndarray:
    n = np.arange(taps) - (taps - 1) / 2.0
    fc = cutoff_hz / SAMPLE_RATE
    h = 2.0 * fc * np.sinc(2.0 * fc * n) * np.hamming(taps)
    normalised: np.ndarray = h / h.sum()
    return normalised


_HUNT, _DATA = 0, 1
_KNOWN_TYPES = (MSG_SDMF, MSG_MDMF, 0x06, 0x82)  # CID and message-waiting (VMWI) messages


class FskCallerIdDecoder:
    """Streaming 1200-baud FSK caller-ID receiver: ``feed(frame) -> CallerId | None``.

    Demodulation: mix to complex baseband around the centre frequency, low-pass
    (removes the image and out-of-band noise), then a phase-difference (quadrature
    delay-line) discriminator, which is level independent (-40..-5 dBm0 work
    alike). Bit timing is recovered from every start-bit edge (interpolated
    zero crossing) and each bit is the mean discriminator output over the
    middle 60 % of the bit, which averages noise at 15 dB SNR down.
    """

    def __init__(
        self,
        standard: str = "v23",
        *,
        min_level_dbm0: float = -46.0,
        min_mark_bits: int = 40,
        max_gap_bits: int = 40,
    ) -> None:
        if standard not in FSK_STANDARDS:
            raise ValueError(f"unknown FSK standard {standard!r}")
        mark, space = FSK_STANDARDS[standard]
        self.standard = standard
        center = (mark + space) / 2.0
        self._shift = (space - mark) / 2.0
        period = SAMPLE_RATE / np.gcd(int(center), SAMPLE_RATE)  # LO repeats exactly
        self._lo_period = int(period)
        k = np.arange(self._lo_period + 4096)
        self._lo = np.exp(-2j * np.pi * center * k / SAMPLE_RATE)
        self._h = _lowpass(25, 1100.0)
        self._smooth = np.array([0.25, 0.5, 0.25])
        self._norm = SAMPLE_RATE / (2.0 * np.pi * self._shift)  # rad/sample -> +-1
        amp = db_to_amplitude(min_level_dbm0)
        self._carrier_thr = amp * amp / 4.0  # |baseband|^2 of a sine at the threshold
        self._bit = SAMPLE_RATE / BAUD
        self._mark_min = int(min_mark_bits * self._bit)
        self._max_gap = max_gap_bits * self._bit
        half = 0.3 * self._bit
        self._win = np.arange(int(np.ceil(-half)), int(np.floor(half)) + 1, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Drop all state, e.g. at the start of every ringing cycle."""
        self._n = 0  # absolute index of next input sample
        self._fir_state = np.zeros(self._h.size - 1, dtype=np.complex128)
        self._last_y = 0j
        self._sm_state = np.zeros(self._smooth.size - 1)
        self._pw_state = np.zeros(7)
        self._d = np.zeros(0)  # smoothed discriminator, +1 = space, -1 = mark
        self._c = np.zeros(0, dtype=bool)  # carrier present
        self._base = 0  # absolute index of self._d[0]
        self._state = _HUNT
        self._mark_run = 0
        self._pos = 0  # DATA: absolute index where the next start-bit search begins
        self._bytes = bytearray()
        self._out: deque[CallerId] = deque()

    # -------------------------------------------------------------- front end
    def _demod(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x.size
        off = self._n % self._lo_period
        if n + off <= self._lo.size:
            lo = self._lo[off : off + n]
        else:
            lo = self._lo[(off + np.arange(n)) % self._lo_period]
        z = np.concatenate((self._fir_state, x * lo))
        self._fir_state = z[-(self._h.size - 1) :]
        y = np.convolve(z, self._h, mode="valid")  # complex baseband, group delay 12
        prev = np.concatenate(([self._last_y], y[:-1]))
        self._last_y = y[-1]
        disc = np.angle(y * np.conj(prev)) * self._norm
        ds = np.concatenate((self._sm_state, disc))
        self._sm_state = ds[-(self._smooth.size - 1) :]
        d = np.convolve(ds, self._smooth, mode="valid")
        pw = np.concatenate((self._pw_state, y.real * y.real + y.imag * y.imag))
        self._pw_state = pw[-7:]
        power = np.convolve(pw, np.full(8, 1.0 / 8.0), mode="valid")
        self._n += n
        return d, power >= self._carrier_thr

    # --------------------------------------------------------------- public
    def feed(self, frame: np.ndarray) -> CallerId | None:
        """Process a frame; return a decoded (or invalid) caller ID when a message ends."""
        x = np.asarray(frame, dtype=np.float64).ravel()
        if x.size:
            d, c = self._demod(x)
            self._d = np.concatenate((self._d, d))
            self._c = np.concatenate((self._c, c))
            self._run()
            done = self._pos if self._state == _DATA else self._base + self._d.size
            keep = done - self._base - 8
            if keep > 0:
                self._d = self._d[keep:]
                self._c = self._c[keep:]
                self._base += keep
        return self._out.popleft() if self._out else None

    # ---------------------------------------------------------- bit engine
    def _run(self) -> None:
        while True:
            if self._state == _HUNT:
                if not self._hunt():
                    return
            elif not self._next_byte():
                return

    def _hunt(self) -> bool:
        """Look for min_mark_bits of steady mark; True when DATA state was entered."""
        start = max(self._pos - self._base, 0)
        m = self._c[start:] & (self._d[start:] < -0.3)
        if m.size == 0:
            return False
        edges = np.concatenate(([-1], np.flatnonzero(~m), [m.size]))
        runs = np.diff(edges) - 1  # mark samples between consecutive non-mark samples
        runs[0] += self._mark_run  # the run carried over from the previous frame
        hit = np.flatnonzero(runs >= self._mark_min)
        if hit.size:
            k = int(hit[0])
            carried = self._mark_run if k == 0 else 0
            self._state = _DATA
            self._pos = self._base + start + int(edges[k]) + 1 + (self._mark_min - carried)
            self._mark_run = 0
            self._bytes.clear()
            return True
        self._mark_run = int(runs[-1])
        self._pos = self._base + start + m.size
        return False

    def _next_byte(self) -> bool:
        """Decode one 8N1 character; False when more samples are needed."""
        d, c, base = self._d, self._c, self._base
        i0 = self._pos - base
        space = np.flatnonzero(d[i0:] >= 0.0)
        lost = np.flatnonzero(~c[i0:])
        first_space = int(space[0]) + i0 if space.size else None
        first_loss = int(lost[0]) + i0 if lost.size else None
        if first_loss is not None and (first_space is None or first_loss < first_space):
            return self._finish(f"carrier lost at sample {base + first_loss}")
        if first_space is None:
            if d.size - i0 > self._max_gap:
                return self._finish("no start bit")
            return False
        if first_space - i0 > self._max_gap:
            return self._finish("no start bit")
        i = first_space
        if i == 0:
            t0 = 0.0
        else:
            a, b = d[i - 1], d[i]
            t0 = i - 1 + (0.0 - a) / (b - a) if b != a else float(i)
        centers = t0 + (np.arange(10) + 0.5) * self._bit
        idx = np.rint(centers[:, None] + self._win[None, :]).astype(np.int64)
        if idx[-1, -1] >= d.size:
            return False  # wait for the rest of the character
        soft = d[idx].mean(axis=1)
        if soft[0] <= 0.0:  # not a real start bit (noise click in the mark)
            self._pos = base + i + 1
            return True
        if not c[idx[-1, -1]]:
            return self._finish("carrier lost inside character")
        if soft[9] >= 0.0:
            return self._finish("framing error (stop bit)")
        value = int(sum(1 << k for k in range(8) if soft[1 + k] < 0.0))
        self._bytes.append(value)
        self._pos = base + int(centers[9])
        if len(self._bytes) == 1 and value not in _KNOWN_TYPES:
            return self._finish("not a caller-ID message type")  # e.g. noise after a mark
        if len(self._bytes) >= 2 and len(self._bytes) == self._bytes[1] + 3:
            return self._finish(None)
        return True

    def _finish(self, error: str | None) -> bool:
        """End of a message attempt: publish a result and go back to hunting."""
        data = bytes(self._bytes)
        if data and data[0] in (MSG_SDMF, MSG_MDMF):
            if error is None:
                try:
                    self._out.append(parse_message(data))
                except CallerIdError:
                    self._out.append(INVALID)
            else:
                self._out.append(INVALID)
        self._bytes.clear()
        self._state = _HUNT
        self._mark_run = 0
        return True


# ------------------------------------------------------------- DTMF (CLIP)
def dtmf_callerid_digits(cid: CallerId, terminator: str = "C") -> str:
    """DTMF CLIP string: ``A<number>C``, or ``B10C`` (private) / ``B00C`` (unavailable).

    With ``terminator="#"`` the Danish-style form is produced: ``A<number>#``,
    ``D1#`` (private), ``D3#`` (unavailable).
    """
    if terminator not in "C#" or len(terminator) != 1:
        raise ValueError("terminator must be 'C' or '#'")
    if cid.number:
        if not all(ch in "0123456789" for ch in cid.number):
            raise CallerIdError("DTMF caller ID carries digits only")
        return f"A{cid.number}{terminator}"
    if terminator == "#":
        return "D1#" if cid.reason == "private" else "D3#"
    return "B10C" if cid.reason == "private" else "B00C"


class DtmfCallerIdParser:
    """Assembles caller ID sent as DTMF digits (fed from :class:`DtmfDetector`).

    Accepted framings (ETSI EN 300 659-1 annex and national variants):
    ``A<number>C`` or ``A<number>#``; ``D<number>C`` (countries that start with
    D); ``B00C`` unavailable / ``B10C`` private; ``D1#`` private, ``D2#``/``D3#``
    unavailable. Digits before a start letter are ignored; a message left
    incomplete for ``timeout_ms`` is discarded.
    """

    def __init__(self, timeout_ms: float = 1500.0) -> None:
        self._timeout = timeout_ms
        self.reset()

    def reset(self) -> None:
        """Forget any partial message."""
        self._fields: list[tuple[str, str]] = []
        self._last_ms: float | None = None

    def feed(self, digit: str | DtmfEvent) -> CallerId | None:
        """Add one digit; return the caller ID when a terminator completes a message."""
        if isinstance(digit, DtmfEvent):
            if (
                self._fields
                and self._last_ms is not None
                and digit.start_ms - self._last_ms > self._timeout
            ):
                self.reset()
            self._last_ms = digit.start_ms
            ch = digit.digit.upper()
        else:
            ch = digit.upper()
        if ch in "ABD":
            self._fields.append((ch, ""))
            return None
        if not self._fields:
            return None
        if ch in "C#":
            fields, self._fields = self._fields, []
            return self._interpret(fields)
        key, value = self._fields[-1]
        self._fields[-1] = (key, value + ch)
        return None

    @staticmethod
    def _interpret(fields: list[tuple[str, str]]) -> CallerId:
        number: str | None = None
        reason: str | None = None
        for key, value in fields:
            if not value or not value.isdigit():
                return INVALID
            if key == "A" or (key == "D" and len(value) > 1 and number is None):
                number = value
            elif key == "B":
                if value == "10":
                    reason = "private"
                elif value == "00":
                    reason = "unavailable"
                else:
                    return INVALID
            elif key == "D" and len(value) == 1:
                if value == "1":
                    reason = "private"
                elif value in "23":
                    reason = "unavailable"
                else:
                    return INVALID
            # A second D field after the number is the redirecting number: not reported.
        if number is None and reason is None:
            return INVALID
        return CallerId(number=number, reason=None if number else reason)
