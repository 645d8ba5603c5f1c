"""Room mixing, sans-I/O: each party hears the sum of the parties it may hear, never itself.

One 20 ms frame per party goes in as a row of an ``(n, 160)`` int16 array; who hears whom is an
``(n, n)`` boolean matrix (row: the listener). The full conference (everyone hears everyone
else) is the common case and costs one sum and one subtraction per party (the total minus the
party's own frame); any other matrix (hold, whisper, listen-only, mute) is one float32
matrix product, exact for int16 sums of up to 2**24 / 32768 = 512 parties. Sums are clipped to
int16, never wrapped.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["full_room", "mix_for"]

Frames = npt.NDArray[np.int16]
Hearing = npt.NDArray[np.bool_]


def full_room(n: int) -> Hearing:
    """The matrix of a plain conference: everyone hears everyone else."""
    hears: Hearing = ~np.eye(n, dtype=np.bool_)
    return hears


def mix_for(frames: Frames, hears: Hearing, *, full: bool = False) -> Frames:
    """What each party hears: row ``i`` is the clipped sum of ``frames[j]`` for every ``j``
    with ``hears[i, j]``. ``full`` says ``hears`` is :func:`full_room` (the fast path)."""
    n = frames.shape[0]
    if hears.shape != (n, n):
        raise ValueError(f"hearing matrix {hears.shape} does not fit {n} parties")
    if n == 0:
        return frames.copy()
    if full:
        wide = frames.astype(np.int32)
        mixed_wide = wide.sum(axis=0) - wide
    else:
        mixed_wide = hears.astype(np.float32) @ frames.astype(np.float32)
    mixed: Frames = np.clip(mixed_wide, -32768, 32767).astype(np.int16)
    return mixed
