"""Batch front end: DTMF + call-progress detection for many lines per matrix product.

The gateway's media loop already holds one 20 ms frame for every active line
at the same moment. Feeding them as one (lines, 160) block lets numpy do the
Goertzel products of all lines in a single matrix multiply and lets quiet or
speech-only lines skip per-line numpy calls entirely. Per-line state still
lives in ordinary :class:`DtmfDetector` / :class:`ProgressToneDetector`
objects, so results are identical to feeding each line on its own (tested),
and a line can be handed over to the per-line API at any frame boundary.
"""

from __future__ import annotations

import numpy as np

from gateway.media.audio import FRAME_SAMPLES

from .dtmf import _ZEROS, BLOCK, DtmfDetector, DtmfEvent
from .progress import CHINA, ProgressToneDetector, ToneTable

__all__ = ["LineBank"]


class LineBank:
    """``lines`` DTMF detectors (+ progress-tone detectors unless ``table`` is None).

    ``feed(frames)`` takes an int16 array of shape (lines, 160) and returns
    ``[(line, DtmfEvent | "busy" | ...), ...]`` for the events of this frame.
    """

    def __init__(
        self, lines: int, table: ToneTable | str | None = CHINA, **dtmf_options: float
    ) -> None:
        self.dtmf = [DtmfDetector(**dtmf_options) for _ in range(lines)]  # type: ignore[arg-type]
        self.progress = (
            None if table is None else [ProgressToneDetector(table) for _ in range(lines)]
        )
        ref = self.dtmf[0]
        self._m = ref._m
        self._gate = ref._gate
        self._hold_floor = ref._hold_floor
        self._rel_hold = ref._rel_hold

    def __len__(self) -> int:
        return len(self.dtmf)

    def reset(self, line: int) -> None:
        """New call on ``line``."""
        self.dtmf[line].reset()
        if self.progress is not None:
            self.progress[line].reset()

    def feed(self, frames: np.ndarray) -> list[tuple[int, DtmfEvent | str]]:
        """Process one 20 ms frame for every line."""
        x = np.array(frames, dtype=np.float64)  # private copy: rows are kept as history
        n_lines = len(self.dtmf)
        if x.shape != (n_lines, FRAME_SAMPLES):
            raise ValueError(f"expected shape ({n_lines}, {FRAME_SAMPLES}), got {x.shape}")
        out: list[tuple[int, DtmfEvent | str]] = []
        dets = self.dtmf
        if any(d._pending.size for d in dets):
            raise RuntimeError("a detector of this bank was fed partial frames directly")
        total = np.einsum("ij,ij->i", x, x)
        first = np.einsum("ij,ij->i", x[:, :BLOCK], x[:, :BLOCK])
        busy = np.fromiter((d._run_len > 0 or d._active >= 0 for d in dets), bool, n_lines)
        sel = np.flatnonzero(busy | (total >= self._gate))
        if sel.size:
            rows = (x[sel].reshape(-1, BLOCK) @ self._m).reshape(sel.size, 2, -1)
            # Vectorised version of the per-block "could this hold a digit" test:
            # lines failing it in both blocks cannot start or continue a run.
            p = rows[:, :, :8] ** 2 + rows[:, :, 8:16] ** 2
            pr, pc = p[:, :, :4].max(axis=2), p[:, :, 4:].max(axis=2)
            e = np.stack([first[sel], total[sel] - first[sel]], axis=1)
            maybe = (
                (pr >= self._hold_floor)
                & (pc >= self._hold_floor)
                & (pr + pc >= self._rel_hold * e)
            ).any(axis=1) | busy[sel]
            work = np.flatnonzero(maybe)
            rows_l = rows[work].tolist()
            e_l = e[work].tolist()
            for j, k in enumerate(work.tolist()):
                line = int(sel[k])
                d = dets[line]
                for ev in d._process(x[line], rows_l[j], e_l[j]):
                    out.append((line, ev))
                d._remember(x[line])
            idle = np.ones(n_lines, dtype=bool)
            idle[sel[work]] = False
        else:
            idle = np.ones(n_lines, dtype=bool)
        for line in np.flatnonzero(idle).tolist():
            dets[line]._prev = _ZEROS
        for d in dets:
            d._pos += FRAME_SAMPLES
        if self.progress is not None:
            kinds = self.progress[0]._classify_many(x, total)
            for line, (pd, kind) in enumerate(zip(self.progress, kinds, strict=False)):
                r = pd._step(kind)
                if r is not None:
                    out.append((line, r))
        return out
