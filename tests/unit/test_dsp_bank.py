"""LineBank must give exactly the per-line detectors' results, only faster."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.bank import LineBank
from gateway.dsp.dtmf import DtmfDetector
from gateway.dsp.levels import db_to_amplitude, to_int16
from gateway.dsp.progress import CHINA, ETSI, US, ProgressToneDetector, ToneTable
from gateway.dsp.tones import add_noise, dial_digits, noise, silence


def _voice_like(ms: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(ms * 8)) / 8000
    f0 = 120 + 60 * np.sin(2 * np.pi * rng.uniform(0.3, 2) * t)
    ph = 2 * np.pi * np.cumsum(f0) / 8000
    return sum(db_to_amplitude(-18) / k * np.sin(k * ph) for k in range(1, 16))


def _line(table: ToneTable, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = []
    while sum(len(p) for p in parts) < 8 * 9000:
        kind = int(rng.integers(0, 5))
        if kind == 0:
            keys = "".join(rng.choice(list("0123456789*#ABCD"), 4))
            on, off = (float(v) for v in rng.integers(40, 120, 2))
            parts.append(dial_digits(keys, on, off))
        elif kind == 1:
            name = str(rng.choice(table.names()))
            parts.append(table.generate(name, float(rng.integers(500, 3000))))
        elif kind == 2:
            parts.append(to_int16(_voice_like(float(rng.integers(200, 1500)), seed)))
        elif kind == 3:
            parts.append(noise(float(rng.integers(100, 800)), -30.0, seed=seed))
        else:
            parts.append(silence(float(rng.integers(20, 500))))
    x = np.concatenate(parts)[: 8 * 9000]
    return add_noise(x, 25.0, seed=seed) if seed % 2 else x


@pytest.mark.parametrize("table", [CHINA, US, ETSI], ids=lambda t: t.country)
def test_bank_equals_per_line_detectors(table: ToneTable) -> None:
    lines = np.stack([_line(table, seed) for seed in range(12)])
    bank = LineBank(len(lines), table)
    singles = [(DtmfDetector(), ProgressToneDetector(table)) for _ in lines]
    got, want = [], []
    for f in range(lines.shape[1] // 160):
        block = lines[:, f * 160 : (f + 1) * 160]
        got += [(f, line, ev) for line, ev in bank.feed(block)]
        for line, (d, p) in enumerate(singles):
            want += [(f, line, ev) for ev in d.feed(block[line])]
            r = p.feed(block[line])
            if r is not None:
                want.append((f, line, r))

    def key(e: tuple[int, int, object]) -> tuple[int, int, str]:
        return e[0], e[1], str(e[2])

    assert sorted(got, key=key) == sorted(want, key=key)
    assert sum(1 for e in want if not isinstance(e[2], str)) > 20  # digits were present
    assert any(isinstance(e[2], str) for e in want)  # and progress tones


def test_bank_without_progress_and_shape_check() -> None:
    bank = LineBank(3, table=None)
    sig = np.stack([dial_digits("12", 60, 60), dial_digits("34", 60, 60), silence(240)])
    events = []
    for f in range(sig.shape[1] // 160):
        events += bank.feed(sig[:, f * 160 : (f + 1) * 160])
    assert [(line, ev.digit) for line, ev in events] == [(0, "1"), (1, "3"), (0, "2"), (1, "4")]
    with pytest.raises(ValueError):
        bank.feed(np.zeros((2, 160), dtype=np.int16))
    bank.reset(0)
    assert bank.dtmf[0].time_ms == 0.0
    assert len(bank) == 3
