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

from .levels import SAMPLE_RATE, db_to_amplitude
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

    def __init__(self, *, min_level_dbm0: float = -35.0, normal_twist_db: float = 8.0,
                 reverse_twist_db: float = 4.0, freq_tolerance: float = 0.025,
                 relative_energy: float = 0.70, max_harmonic_db: float = -15.0,
                 max_residual_line_db: float = -19.0,
                 min_tone_blocks: int = 3, min_pause_blocks: int = 3) -> None:
        ang = np.outer(np.arange(SUB), _OMEGA)
        # e^{-jwn} for one sub-block: cos and sin halves of one real matrix.
        self._m = np.hstack([np.cos(ang), np.sin(ang)])  # (40, 16)
        self._rot_sub = np.exp(-1j * _OMEGA * SUB)
        self._rot_sub_l = self._rot_sub.tolist()
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
        self._scan_f = np.arange(250.0, 3500.0, 15.0)
        win = np.hanning(self._n_ls)[:, None]
        sang = np.outer(self._t_ls, self._scan_f)
        self._scan = np.hstack([np.cos(sang) * win, np.sin(sang) * win])
        self._scan_norm = (2.0 / float(np.hanning(self._n_ls).sum())) ** 2  # -> amplitude^2
        self._purity = 10.0 ** (max_residual_line_db / 10.0)
        self._last_checks: tuple[float, ...] = ()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all stream state (new call)."""
        self._pending = np.zeros(0, dtype=np.float64)
        self._hist = np.zeros(self._n_ls, dtype=np.float64)
        self._prev_sub = [0j] * 8  # last sub-block DFT values
        self._prev_blk = [0j] * 8  # last block DFT values
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
        x = np.asarray(frame, dtype=np.float64).ravel()
        if self._pending.size:
            x = np.concatenate((self._pending, x))
        n = (x.size // BLOCK) * BLOCK
        self._pending = x[n:].copy() if n < x.size else np.zeros(0, dtype=np.float64)
        if n == 0:
            return []
        x = x[:n]
        nb = n // BLOCK
        energies = np.einsum("ij,ij->i", x.reshape(nb, BLOCK), x.reshape(nb, BLOCK)).tolist()
        events: list[DtmfEvent] = []
        if self._run_len == 0 and self._active < 0 and max(energies) < self._gate:
            # Quiet: nothing can become a digit; just advance the clock and history.
            self._prev_sub = [0j] * 8
            self._prev_blk = [0j] * 8
        else:
            events = self._process(x, nb, energies)
        self._hist = x[-self._n_ls:].copy() if n >= self._n_ls else \
            np.concatenate((self._hist, x))[-self._n_ls:]
        self._pos += n
        return events

    def _process(self, x: np.ndarray, nb: int, energies: list[float]) -> list[DtmfEvent]:
        r = x.reshape(2 * nb, SUB) @ self._m
        s = r[:, :8] - 1j * r[:, 8:]  # sub-block DFT values, local phase reference
        blk = s[0::2] + s[1::2] * self._rot_sub  # (nb, 8) block DFT values
        p = (blk.real * blk.real + blk.imag * blk.imag).tolist()
        s_l = s.tolist()
        blk_l = blk.tolist()
        events: list[DtmfEvent] = []
        for b in range(nb):
            pb = p[b]
            e = energies[b]
            row = max(range(4), key=pb.__getitem__)
            pcol = pb[4:]
            col = 4 + max(range(4), key=pcol.__getitem__)
            pr, pc = pb[row], pb[col]
            digit = -1
            hold = False
            if pr >= self._hold_floor and pc >= self._hold_floor and e > 0.0:
                tot = pr + pc
                hold = tot >= self._rel_hold * e
                if (pr >= self._floor and pc >= self._floor and tot >= self._rel * e
                        and self._tw_lo * pr <= pc <= self._tw_hi * pr):
                    digit = row * 4 + (col - 4)
            prev_sub = self._prev_sub
            prev_blk = self._prev_blk
            sb0, sb1 = s_l[2 * b], s_l[2 * b + 1]
            cur = blk_l[b]
            if digit >= 0:
                # Coarse (sub-block) and fine (block) phase advances for both tones.
                c_in_r = sb1[row] * sb0[row].conjugate() * self._rot_sub_l[row]
                c_in_c = sb1[col] * sb0[col].conjugate() * self._rot_sub_l[col]
                if digit == self._run_digit:
                    f_r = cur[row] * prev_blk[row].conjugate() * self._rot_block_l[row]
                    f_c = cur[col] * prev_blk[col].conjugate() * self._rot_block_l[col]
                    c_r = c_in_r + sb0[row] * prev_sub[row].conjugate() * self._rot_sub_l[row]
                    c_c = c_in_c + sb0[col] * prev_sub[col].conjugate() * self._rot_sub_l[col]
                    if (abs(_offset_hz(f_r, c_r)) <= self._block_tol * _FREQS[row]
                            and abs(_offset_hz(f_c, c_c)) <= self._block_tol * _FREQS[col]):
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
                if hold and row * 4 + (col - 4) == self._active:
                    self._miss = 0
                else:
                    self._miss += 1
                    if self._miss >= self._pause_blocks:
                        self._active = -1
            if (self._active < 0 and self._run_len >= self._min_blocks and not self._run_fired
                    and self._validate(x, b, row, col)):
                self._run_fired = True
                self._active = self._run_digit
                self._miss = 0
                events.append(DtmfEvent(_DIGITS[self._run_digit],
                                        self._run_start * 1000.0 / SAMPLE_RATE))
            self._prev_sub = sb1
            self._prev_blk = cur
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
        y = x[end - self._n_ls:end] if end >= self._n_ls else \
            np.concatenate((self._hist[end - self._n_ls:], x[:end]))
        freqs = np.array([f_row, f_col, 2.0 * f_row, 2.0 * f_col])
        ang = np.outer(self._t_ls, freqs)
        c, s = np.cos(ang), np.sin(ang)
        ramp = self._ramp[:, None]
        basis = np.hstack([c, s, c[:, :2] * ramp, s[:, :2] * ramp])
        coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
        amp2 = (coef[:4] ** 2 + coef[4:8] ** 2).tolist()
        a_row, a_col, h_row, h_col = amp2
        if a_row <= 0.0 or a_col <= 0.0:
            return False
        twist_db = 10.0 * math.log10(a_col / a_row)
        if twist_db < -self._normal_twist or twist_db > self._reverse_twist:
            return False
        if h_row > self._harm * a_row or h_col > self._harm * a_col:
            return False
        resid = y - basis @ coef
        spec = resid @ self._scan
        k = spec.shape[0] // 2
        line2 = (spec[:k] ** 2 + spec[k:] ** 2) * self._scan_norm
        near = (np.abs(self._scan_f[:, None] - freqs[None, :]) < _GUARD_HZ).any(axis=1)
        worst = float(line2[~near].max())
        self._last_checks = (f_row, f_col, twist_db, h_row / a_row, h_col / a_col,
                             worst / (a_row + a_col))
        return worst <= self._purity * (a_row + a_col)


def _offset_hz(fine: complex, coarse: complex) -> float:
    """Frequency offset from the fine phase advance, unwrapped with the coarse one."""
    f = cmath.phase(fine) * _HZ_PER_RAD_BLOCK
    c = cmath.phase(coarse) * _HZ_PER_RAD_SUB
    return f + _ALIAS_HZ * round((c - f) / _ALIAS_HZ)
