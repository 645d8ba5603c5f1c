"""Call-progress tones: per-country tables, generator and cadence detector.

Outbound dialling on analog trunks needs to know whether the far end is
ringing, busy or congested (and whether a dial tone is present before
dialling). Tones are identified by *frequency set* per 20 ms frame and then by
*cadence*: durations of on/off segments compared with the table.

Timing rule: a segment matches a nominal duration ``d`` if it is within
``+-(20 % of d + 40 ms)`` (20 ms frames and a 2-frame debounce add up to 40 ms
of quantisation). Busy/congestion are reported after two full on/off cycles,
ringback after one, dial after a continuous tone longer than any on-segment of
another tone with the same frequencies (300 ms minimum), so a ringback burst
is never mistaken for dial tone where both use 450 Hz or 425 Hz.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gateway.media.audio import FRAME_SAMPLES, SAMPLE_RATE

from .levels import dbm0_to_power
from .tones import cadence as _cadence
from .tones import tone as _tone

__all__ = [
    "CHINA",
    "ETSI",
    "TONE_TABLES",
    "US",
    "ProgressToneDetector",
    "ToneSpec",
    "ToneTable",
    "tone_table",
]

_TOL_FRAC = 0.20
_TOL_MS = 40.0


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """One supervisory tone: frequencies, cadence (alternating on/off ms, starting
    with on; empty = continuous), cycles needed to recognise it, nominal level."""

    name: str
    freqs: tuple[float, ...]
    cadence_ms: tuple[float, ...] = ()
    cycles: int = 2
    level_dbm0: float = -13.0

    @property
    def continuous(self) -> bool:
        return not self.cadence_ms


@dataclass(frozen=True, slots=True)
class ToneTable:
    """The supervisory tones of one country/network."""

    country: str
    tones: tuple[ToneSpec, ...]
    _by_name: dict[str, ToneSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tones})

    def __getitem__(self, name: str) -> ToneSpec:
        return self._by_name[name]

    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tones)

    def generate(
        self, name: str, duration_ms: float, level_dbm0: float | None = None
    ) -> np.ndarray:
        """``duration_ms`` of the named tone with its cadence (for the simulated exchange)."""
        spec = self[name]
        level = spec.level_dbm0 if level_dbm0 is None else level_dbm0
        n = round(duration_ms * SAMPLE_RATE / 1000.0)
        if spec.continuous:
            return _tone(spec.freqs, duration_ms, level)
        period = float(sum(spec.cadence_ms))
        reps = int(np.ceil(duration_ms / period))
        parts = []
        for _ in range(reps):
            for i in range(0, len(spec.cadence_ms), 2):
                off = spec.cadence_ms[i + 1] if i + 1 < len(spec.cadence_ms) else 0.0
                parts.append(_cadence(spec.freqs, spec.cadence_ms[i], off, 1, level))
        return np.concatenate(parts)[:n]


#: China (YDN 069 / national practice): everything on 450 Hz.
CHINA = ToneTable(
    "CN",
    (
        ToneSpec("dial", (450.0,), (), level_dbm0=-10.0),
        ToneSpec("busy", (450.0,), (350.0, 350.0), cycles=2, level_dbm0=-10.0),
        ToneSpec("congestion", (450.0,), (700.0, 700.0), cycles=2, level_dbm0=-10.0),
        ToneSpec("ringback", (450.0,), (1000.0, 4000.0), cycles=1, level_dbm0=-10.0),
    ),
)
#: North America, Precise Tone Plan (congestion = "reorder").
US = ToneTable(
    "US",
    (
        ToneSpec("dial", (350.0, 440.0), (), level_dbm0=-13.0),
        ToneSpec("busy", (480.0, 620.0), (500.0, 500.0), cycles=2, level_dbm0=-24.0),
        ToneSpec("congestion", (480.0, 620.0), (250.0, 250.0), cycles=2, level_dbm0=-24.0),
        ToneSpec("ringback", (440.0, 480.0), (2000.0, 4000.0), cycles=1, level_dbm0=-19.0),
    ),
)
#: ETSI/CEPT harmonised tones (ETSI ES 201 970, TR 101 041): 425 Hz.
ETSI = ToneTable(
    "ETSI",
    (
        ToneSpec("dial", (425.0,), (), level_dbm0=-10.0),
        ToneSpec("busy", (425.0,), (500.0, 500.0), cycles=2, level_dbm0=-10.0),
        ToneSpec("congestion", (425.0,), (250.0, 250.0), cycles=2, level_dbm0=-10.0),
        ToneSpec("ringback", (425.0,), (1000.0, 4000.0), cycles=1, level_dbm0=-10.0),
    ),
)
TONE_TABLES: dict[str, ToneTable] = {"CN": CHINA, "US": US, "ETSI": ETSI}


def tone_table(country: str = "CN") -> ToneTable:
    """Table by country code ("CN" default, "US", "ETSI")."""
    try:
        return TONE_TABLES[country.upper()]
    except KeyError:
        raise KeyError(f"no tone table for {country!r}; have {sorted(TONE_TABLES)}") from None


def _matches(measured: float, nominal: float) -> bool:
    return abs(measured - nominal) <= _TOL_FRAC * nominal + _TOL_MS


class ProgressToneDetector:
    """Streaming call-progress detector: ``feed(frame) -> "dial"|"busy"|... | None``.

    Each 20 ms frame is "on" for a frequency set when those bins hold >= 70 %
    of the frame energy, every tone of the set is within 10 dB of the strongest
    one, and the set is above -42 dBm0; the 160-sample window gives about
    +-2.5 % frequency tolerance (a tone 5 % off is not recognised). A state
    change needs two consecutive frames. Each recognised tone is reported once;
    the memory is cleared after 6 s without any tone or by :meth:`reset`.
    """

    def __init__(
        self,
        table: ToneTable | str = CHINA,
        *,
        min_level_dbm0: float = -42.0,
        relative_energy: float = 0.70,
        balance_db: float = 10.0,
    ) -> None:
        self.table = tone_table(table) if isinstance(table, str) else table
        freqs = sorted({f for t in self.table.tones for f in t.freqs})
        self._freqs = freqs
        ang = np.outer(np.arange(FRAME_SAMPLES), 2.0 * np.pi * np.array(freqs) / SAMPLE_RATE)
        self._m = np.hstack([np.cos(ang), np.sin(ang)])
        self._nf = len(freqs)
        sets = sorted({t.freqs for t in self.table.tones})
        self._sets = [tuple(freqs.index(f) for f in s) for s in sets]
        self._set_of = {t.name: sets.index(t.freqs) for t in self.table.tones}
        self._set_matrix = np.zeros((len(freqs), len(sets)))
        for k, idx in enumerate(self._sets):
            self._set_matrix[list(idx), k] = 1.0
        # |X|^2 * 2/N is the energy of a tone in the frame: compare with frame energy.
        self._rel = relative_energy * FRAME_SAMPLES / 2.0
        self._min_tone = dbm0_to_power(min_level_dbm0) * FRAME_SAMPLES * FRAME_SAMPLES / 2.0
        self._gate = 0.5 * self._min_tone * 2.0 / FRAME_SAMPLES  # frame energy too low for any tone
        self._balance = 10.0 ** (-balance_db / 10.0)
        self._cadenced = [t for t in self.table.tones if not t.continuous]
        self._dial: list[tuple[str, int, float]] = []
        for t in self.table.tones:
            if t.continuous:
                longest = max(
                    (max(o.cadence_ms[0::2]) for o in self._cadenced if o.freqs == t.freqs),
                    default=0.0,
                )
                need = max(300.0, longest * (1 + _TOL_FRAC) + _TOL_MS + 20.0)
                self._dial.append((t.name, self._set_of[t.name], need))
        self._forget_ms = 6000.0
        self.reset()

    def reset(self) -> None:
        """Forget segments and what was already reported (new call attempt)."""
        self._pending = np.zeros(0, dtype=np.float64)
        self._state = -1  # debounced: -1 = no tone, else frequency-set index
        self._cand = -1
        self._cand_frames = 0
        self._seg_frames = 0
        self._segments: deque[tuple[int, float]] = deque(maxlen=12)
        self._reported: str | None = None
        self._quiet_ms = 0.0

    # ---------------------------------------------------------------- frames
    def _classify(self, x: np.ndarray) -> int:
        """Frequency-set index present in this frame, or -1."""
        energy = float(x @ x)
        if energy < self._gate:
            return -1
        r = (x @ self._m).tolist()
        nf = self._nf
        p = [r[i] * r[i] + r[nf + i] * r[nf + i] for i in range(nf)]
        best, best_sum = -1, 0.0
        for k, s in enumerate(self._sets):
            tot = sum(p[i] for i in s)
            if tot > best_sum:
                best, best_sum = k, tot
        if best < 0 or best_sum < self._rel * energy:
            return -1
        powers = [p[i] for i in self._sets[best]]
        strongest = max(powers)
        if min(powers) < self._balance * strongest or best_sum < self._min_tone:
            return -1
        return best

    def _classify_many(self, frames: np.ndarray, energies: np.ndarray) -> list[int]:
        """Vectorised :meth:`_classify` for a (lines, 160) block (used by LineBank)."""
        r = frames @ self._m
        nf = self._nf
        p = r[:, :nf] ** 2 + r[:, nf:] ** 2
        if len(self._sets) == 1 and len(self._sets[0]) == 1:  # e.g. 450 Hz only
            best = np.zeros(frames.shape[0], dtype=np.int64)
            best_sum = p[:, 0]
            balanced = True
        else:
            sums = p @ self._set_matrix
            best = np.argmax(sums, axis=1)
            rows = np.arange(frames.shape[0])
            best_sum = sums[rows, best]
            # Every tone of the chosen set within balance of its strongest tone.
            member = self._set_matrix.T[best] > 0  # (lines, freqs)
            hi = np.where(member, p, 0.0).max(axis=1)
            lo = np.where(member, p, np.inf).min(axis=1)
            balanced = lo >= self._balance * hi
        ok = (
            (energies >= self._gate)
            & (best_sum > 0.0)
            & (best_sum >= self._rel * energies)
            & balanced
            & (best_sum >= self._min_tone)
        )
        kinds: list[int] = np.where(ok, best, -1).tolist()
        return kinds

    def feed(self, frame: np.ndarray) -> str | None:
        """Process samples (normally one 20 ms frame); return a newly recognised tone."""
        x = np.asarray(frame, dtype=np.float64).ravel()
        if self._pending.size:
            x = np.concatenate((self._pending, x))
        n = (x.size // FRAME_SAMPLES) * FRAME_SAMPLES
        if n < x.size or self._pending.size:
            self._pending = x[n:].copy()
        if n == FRAME_SAMPLES:
            return self._step(self._classify(x[:FRAME_SAMPLES]))
        result: str | None = None
        for k in range(0, n, FRAME_SAMPLES):
            r = self._step(self._classify(x[k : k + FRAME_SAMPLES]))
            result = result or r
        return result

    # --------------------------------------------------------------- cadence
    def _step(self, kind: int) -> str | None:
        ms = 1000.0 * FRAME_SAMPLES / SAMPLE_RATE
        if kind == self._state:
            self._seg_frames += 1 + self._cand_frames
            self._cand, self._cand_frames = -1, 0
        elif kind == self._cand:
            self._cand_frames += 1
            if self._cand_frames >= 2:  # debounced transition
                self._segments.append((self._state, self._seg_frames * ms))
                self._state, self._seg_frames = kind, self._cand_frames
                self._cand, self._cand_frames = -1, 0
                found = self._match_cadence()
                if found:
                    return self._report(found)
        else:
            self._seg_frames += self._cand_frames
            self._cand, self._cand_frames = kind, 1
        self._quiet_ms = self._quiet_ms + ms if self._state < 0 else 0.0
        if self._quiet_ms > self._forget_ms:
            self._reported = None
            self._segments.clear()
        if self._state >= 0:
            dur = (self._seg_frames + self._cand_frames) * ms
            for name, set_idx, need in self._dial:
                if self._state == set_idx and dur >= need:
                    return self._report(name)
        return None

    def _report(self, name: str) -> str | None:
        if name == self._reported:
            return None
        self._reported = name
        return name

    def _match_cadence(self) -> str | None:
        """Check completed segments (just closed by a new state) against each cadence."""
        segs = list(self._segments)
        for spec in self._cadenced:
            set_idx = self._set_of[spec.name]
            pattern = spec.cadence_ms * spec.cycles
            if len(segs) < len(pattern):
                continue
            tail = segs[-len(pattern) :]
            for i, (kind, dur) in enumerate(tail):
                on = i % 2 == 0
                wrong_kind = (kind == set_idx) != on or (not on and kind >= 0)
                if wrong_kind or not _matches(dur, pattern[i]):
                    break
            else:
                return spec.name
        return None
