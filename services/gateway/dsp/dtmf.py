"""Streaming DTMF receiver for 8 kHz int16 PCM (ITU-T Q.23 / Q.24 behaviour).

Why it is built this way (details and numbers in docs/analog-dsp.md):

* Goertzel/DFT values for the 8 DTMF frequencies are computed for 5 ms
  sub-blocks with one small matrix multiply per frame; pairs of sub-blocks form
  the 10 ms (80-sample) analysis blocks. 80 samples divide a 20 ms frame, so no
  samples have to be carried between frames except the last block's state.
* A 10 ms block is far too short to tell 1.5 % from 3.5 % detuning by magnitude,
  so the frequency of each tone is *measured* from the phase advance between
  consecutive blocks (fine, +-50 Hz unambiguous) resolved by the phase advance
  between sub-blocks (coarse, +-100 Hz unambiguous).
* A tone is accepted after 3 consecutive valid blocks (always present in a
  40 ms tone, impossible in a <=23 ms one given the 70 % energy-purity test),
  and released after 3 consecutive invalid blocks (any >=40 ms pause), so one
  key press gives exactly one event.
* Before an event is emitted the last 30 ms are least-squares fitted with both
  tones at their measured frequencies plus their 2nd harmonics: this gives an
  exact twist measurement and a harmonic check that works even when a row
  harmonic falls next to a column tone (2 x 697 = 1394 Hz vs 1336 Hz).
  The strongest spectral line left in the fit residual must be 19 dB below the
  tones: a real key press leaves only noise there, while voiced speech whose
  harmonics happen to hit a row and a column frequency leaves its neighbouring
  harmonics (this is what rejects talk-off from high-pitched voices).
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass

import numpy as np

from gateway.media.audio import SAMPLE_RATE

from .levels import db_to_amplitude
from .tones import DTMF_COLS, DTMF_KEYS, DTMF_ROWS

__all__ = ["DtmfDetector", "DtmfEvent"]

SUB = 40  # sub-block (5 ms): coarse phase step, unambiguous to +-100 Hz
BLOCK = 2 * SUB  # analysis block (10 ms): fine phase step, unambiguous to +-50 Hz
_FREQS = DTMF_ROWS + DTMF_COLS  # index: 0-3 rows, 4-7 columns
_OMEGA = 2.0 * np.pi * np.array(_FREQS) / SAMPLE_RATE
_DIGITS = "".join(DTMF_KEYS)  # index = row * 4 + col
_HZ_PER_RAD_SUB = SAMPLE_RATE / (2.0 * np.pi * SUB)
_HZ_PER_RAD_BLOCK = SAMPLE_RATE / (2.0 * np.pi * BLOCK)
_ALIAS_HZ = SAMPLE_RATE / BLOCK  # 100 Hz: ambiguity period of the fine estimate
_GUARD_HZ = 60.0  # residual lines this close to a fitted tone are fit error, not speech
_SCAN_LO, _SCAN_STEP = 250.0, 15.0  # residual-line search grid, Hz
_ZEROS = [0.0] * 48
_EMPTY = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One detected key press; ``start_ms`` is stream time of the tone onset (+-10 ms)."""

    digit: str
    start_ms: float


class DtmfDetector:
    """Per-line streaming DTMF detector: ``feed(frame) -> list[DtmfEvent]``.

    Defaults follow ITU-T Q.24 practice: accept +-1.5 %, reject +-3.5 % (decision
    at 2.5 %); twist: column tone up to 8 dB weaker than the row tone ("normal"
    twist, what a long loop does to the high group) or up to 4 dB stronger
    ("reverse" twist); each tone at least -35 dBm0; the two tones must hold at
    least 70 % of the block energy; 2nd harmonics at least 15 dB and any other
    spectral line at least 19 dB below the tones; >= 30 ms of steady tone to
    accept (all 40 ms tones pass, no 23 ms tone does), >= 30 ms of non-tone to
    release (so a 40 ms pause always separates two presses, a 10 ms drop-out
    never does).
    """

    def __init__(
        self,
        *,
        min_level_dbm0: float = -35.0,
        normal_twist_db: float = 8.0,
        reverse_twist_db: float = 4.0,
        freq_tolerance: float = 0.025,
        relative_energy: float = 0.70,
        max_harmonic_db: float = -15.0,
        max_residual_line_db: float = -19.0,
        min_tone_blocks: int = 3,
        min_pause_blocks: int = 3,
    ) -> None:
        # One real (80 x 48) matrix gives, per 80-sample block, cos/sin sums for the
        # whole block and for each 40-sample half (each with a local phase
        # reference): X = C - jS. A real matmul is ~3x faster than a complex one.
        n = np.arange(BLOCK)[:, None]
        ang = n * _OMEGA[None, :]
        first = (n < SUB).astype(np.float64)
        ang2 = (n - SUB) * _OMEGA[None, :]
        self._m = np.hstack(
            [
                np.cos(ang),
                np.sin(ang),
                np.cos(ang) * first,
                np.sin(ang) * first,
                np.cos(ang2) * (1 - first),
                np.sin(ang2) * (1 - first),
            ]
        )
        self._rot_sub_l = np.exp(-1j * _OMEGA * SUB).tolist()
        self._rot_block_l = np.exp(-1j * _OMEGA * BLOCK).tolist()
        amp = db_to_amplitude(min_level_dbm0)
        self._floor = (amp * BLOCK / 2.0) ** 2  # |X|^2 of a floor-level tone
        self._hold_floor = self._floor * 10.0 ** (-3.0 / 10.0)
        self._gate = 2.0 * self._floor * 2.0 / BLOCK  # block energy below which nothing passes
        self._rel = relative_energy * BLOCK / 2.0  # compare |X|^2 sums with block energy
        self._rel_hold = 0.5 * BLOCK / 2.0
        self._tw_lo = 10.0 ** (-(normal_twist_db + 2.0) / 10.0)  # loose per-block pre-check
        self._tw_hi = 10.0 ** ((reverse_twist_db + 2.0) / 10.0)
        self._normal_twist = normal_twist_db
        self._reverse_twist = reverse_twist_db
        self._tol = freq_tolerance
        self._block_tol = freq_tolerance + 0.007
        self._harm = 10.0 ** (max_harmonic_db / 10.0)
        self._min_blocks = min_tone_blocks
        self._pause_blocks = min_pause_blocks
        self._n_ls = min_tone_blocks * BLOCK
        self._t_ls = np.arange(self._n_ls, dtype=np.float64) * (2.0 * np.pi / SAMPLE_RATE)
        self._ramp = (np.arange(self._n_ls) - (self._n_ls - 1) / 2.0) / self._n_ls
        # Hann-windowed DFT over the voice band to find the strongest residual line.
        self._scan_f = np.arange(_SCAN_LO, 3500.0, _SCAN_STEP)
        win = np.hanning(self._n_ls)[:, None]
        sang = np.outer(self._t_ls, self._scan_f)
        self._scan = np.hstack([np.cos(sang) * win, np.sin(sang) * win])
        self._scan_norm = (2.0 / float(np.hanning(self._n_ls).sum())) ** 2  # -> amplitude^2
        self._purity = 10.0 ** (max_residual_line_db / 10.0)
        # Last run-level measurements (f_row, f_col, twist, harmonics, purity): field tuning aid.
        self._last_checks: tuple[float, ...] = ()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all stream state (new call)."""
        self._pending = np.zeros(0, dtype=np.float64)
        self._tail: list[np.ndarray] = [np.zeros(self._n_ls)]  # recent chunks (>= 30 ms)
        self._prev = _ZEROS  # matmul row of the previous block
        self._pos = 0  # samples consumed (stream clock)
        self._run_digit = -1
        self._run_len = 0
        self._run_start = 0
        self._run_fired = False
        self._acc = [0j, 0j, 0j, 0j]  # fine row, fine col, coarse row, coarse col
        self._active = -1
        self._miss = 0

    @property
    def time_ms(self) -> float:
        """Stream time of the next unprocessed sample."""
        return (self._pos + self._pending.size) * 1000.0 / SAMPLE_RATE

    # --------------------------------------------------------------- process
    def feed(self, frame: np.ndarray) -> list[DtmfEvent]:
        """Process any number of samples (normally one 20 ms frame); return new events."""
        x = np.array(frame, dtype=np.float64).ravel()  # private copy: kept as history
        if self._pending.size:
            x = np.concatenate((self._pending, x))
        n = (x.size // BLOCK) * BLOCK
        if n < x.size:
            self._pending = x[n:]
            x = x[:n]
        elif self._pending.size:
            self._pending = _EMPTY
        if n == 0:
            return []
        nb = n // BLOCK
        total = float(x @ x)
        events: list[DtmfEvent] = []
        if self._run_len == 0 and self._active < 0 and total < self._gate:
            # Quiet: nothing can become a digit. The history is not needed either:
            # a validated run consists of 3 blocks from frames that were processed.
            self._prev = _ZEROS
        else:
            xr = x.reshape(nb, BLOCK)
            if nb == 2:
                e0 = float(xr[0] @ xr[0])
                energies = [e0, total - e0]
            else:
                energies = np.einsum("ij,ij->i", xr, xr).tolist()
            events = self._process(x, (xr @ self._m).tolist(), energies)
            self._remember(x)
        self._pos += n
        return events

    def _remember(self, x: np.ndarray) -> None:
        """Keep the most recent >= 30 ms of processed samples for the LS fit."""
        tail = self._tail
        tail.append(x)
        size = sum(len(t) for t in tail)
        while size - len(tail[0]) >= self._n_ls:
            size -= len(tail.pop(0))

    def _process(
        self, x: np.ndarray, rows: list[list[float]], energies: list[float]
    ) -> list[DtmfEvent]:
        events: list[DtmfEvent] = []
        rot_s, rot_b = self._rot_sub_l, self._rot_block_l
        hold_floor = self._hold_floor
        for b, rb in enumerate(rows):
            pb = [c * c + s * s for c, s in zip(rb[:8], rb[8:16], strict=False)]
            e = energies[b]
            pr, pc = max(pb[:4]), max(pb[4:])
            digit = pair = row = col = -1
            hold = False
            if pr >= hold_floor and pc >= hold_floor and pr + pc >= self._rel_hold * e > 0.0:
                hold = True
                row, col = pb.index(pr), pb.index(pc, 4)
                pair = row * 4 + (col - 4)
                if (
                    pr >= self._floor
                    and pc >= self._floor
                    and pr + pc >= self._rel * e
                    and self._tw_lo * pr <= pc <= self._tw_hi * pr
                ):
                    digit = pair
            if digit >= 0:
                # Coarse (sub-block) and fine (block) phase advances of both tones.
                pv = self._prev
                s0r = complex(rb[16 + row], -rb[24 + row])
                s1r = complex(rb[32 + row], -rb[40 + row])
                s0c = complex(rb[16 + col], -rb[24 + col])
                s1c = complex(rb[32 + col], -rb[40 + col])
                c_in_r = s1r * s0r.conjugate() * rot_s[row]
                c_in_c = s1c * s0c.conjugate() * rot_s[col]
                if digit == self._run_digit:
                    xr_ = complex(rb[row], -rb[8 + row])
                    xc_ = complex(rb[col], -rb[8 + col])
                    f_r = xr_ * complex(pv[row], pv[8 + row]) * rot_b[row]
                    f_c = xc_ * complex(pv[col], pv[8 + col]) * rot_b[col]
                    c_r = c_in_r + s0r * complex(pv[32 + row], pv[40 + row]) * rot_s[row]
                    c_c = c_in_c + s0c * complex(pv[32 + col], pv[40 + col]) * rot_s[col]
                    if (
                        abs(_offset_hz(f_r, c_r)) <= self._block_tol * _FREQS[row]
                        and abs(_offset_hz(f_c, c_c)) <= self._block_tol * _FREQS[col]
                    ):
                        acc = self._acc
                        acc[0] += f_r
                        acc[1] += f_c
                        acc[2] += c_r
                        acc[3] += c_c
                        self._run_len += 1
                    else:
                        digit = -1
                else:
                    self._run_digit = digit
                    self._run_len = 1
                    self._run_start = self._pos + b * BLOCK
                    self._run_fired = False
                    self._acc = [0j, 0j, c_in_r, c_in_c]
            if digit < 0:
                self._run_digit = -1
                self._run_len = 0
            # Key-press state machine: one event per press.
            if self._active >= 0:
                if hold and pair == self._active:
                    self._miss = 0
                else:
                    self._miss += 1
                    if self._miss >= self._pause_blocks:
                        self._active = -1
            if (
                self._active < 0
                and self._run_len >= self._min_blocks
                and not self._run_fired
                and self._validate(x, b, row, col)
            ):
                self._run_fired = True
                self._active = self._run_digit
                self._miss = 0
                events.append(
                    DtmfEvent(_DIGITS[self._run_digit], self._run_start * 1000.0 / SAMPLE_RATE)
                )
            self._prev = rb
        return events

    def _validate(self, x: np.ndarray, b: int, row: int, col: int) -> bool:
        """Run-level checks on the last 30 ms: frequency, twist, harmonics, purity.

        The block test only says "two DTMF bins dominate"; voiced speech with
        F0 ~ 170-250 Hz can do that for 30 ms. A least-squares fit of the two
        tones (measured frequencies, with linear amplitude/phase drift terms)
        and their 2nd harmonics leaves noise for a real DTMF signal but the
        neighbouring voice harmonics for speech, so the strongest residual
        spectral line is compared with the tone power.
        """
        acc = self._acc
        f_row = _FREQS[row] + _offset_hz(acc[0], acc[2])
        f_col = _FREQS[col] + _offset_hz(acc[1], acc[3])
        if abs(f_row / _FREQS[row] - 1.0) > self._tol or abs(f_col / _FREQS[col] - 1.0) > self._tol:
            return False
        end = (b + 1) * BLOCK
        y = (
            x[end - self._n_ls : end]
            if end >= self._n_ls
            else np.concatenate(self._tail + [x[:end]])[-self._n_ls :]
        )
        freqs = np.array([f_row, f_col, 2.0 * f_row, 2.0 * f_col])
        z = np.exp(1j * np.outer(self._t_ls, freqs[:2]))  # fundamentals; harmonics by z^2
        basis = np.empty((self._n_ls, 12))
        c, s = z.real, z.imag
        basis[:, 0:2] = c
        basis[:, 2:4] = 2.0 * c * c - 1.0
        basis[:, 4:6] = s
        basis[:, 6:8] = 2.0 * s * c
        basis[:, 8:10] = c * self._ramp[:, None]  # linear drift of amplitude/phase
        basis[:, 10:12] = s * self._ramp[:, None]
        # Normal equations: 12 well-separated columns, far cheaper than lstsq's SVD.
        coef = np.linalg.solve(basis.T @ basis, basis.T @ y)
        amp2 = (coef[:4] ** 2 + coef[4:8] ** 2).tolist()
        a_row, a_col, h_row, h_col = amp2
        if a_row <= 0.0 or a_col <= 0.0:
            return False
        twist_db = 10.0 * math.log10(a_col / a_row)
        if twist_db < -self._normal_twist or twist_db > self._reverse_twist:
            return False
        if h_row > self._harm * a_row or h_col > self._harm * a_col:
            return False
        spec = (y - basis @ coef) @ self._scan
        k = spec.size // 2
        line2 = (spec[:k] ** 2 + spec[k:] ** 2) * self._scan_norm
        for f in freqs.tolist():  # blank the fitted tones' own neighbourhood
            lo = max(0, math.ceil((f - _GUARD_HZ - _SCAN_LO) / _SCAN_STEP))
            line2[lo : max(lo, math.floor((f + _GUARD_HZ - _SCAN_LO) / _SCAN_STEP) + 1)] = 0.0
        worst = float(line2.max())
        self._last_checks = (
            f_row,
            f_col,
            twist_db,
            h_row / a_row,
            h_col / a_col,
            worst / (a_row + a_col),
        )
        return bool(worst <= self._purity * (a_row + a_col))


def _offset_hz(fine: complex, coarse: complex) -> float:
    """Frequency offset from the fine phase advance, unwrapped with the coarse one."""
    f = cmath.phase(fine) * _HZ_PER_RAD_BLOCK
    c = cmath.phase(coarse) * _HZ_PER_RAD_SUB
    return f + _ALIAS_HZ * round((c - f) / _ALIAS_HZ)
