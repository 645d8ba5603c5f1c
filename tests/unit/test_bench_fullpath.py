"""Parts of the full-path benchmark that decide what it reports: the voices (each side plays its
own tone in its own law for the whole call, every 20 ms frame, so the gateway bridges,
transcodes and records audio all along; the sample pcap Debian ships held 4.7 s, and long calls
were measured mostly silent), and the rate SIPp really placed a step's calls at (a loaded
machine slows the load generator, and a step it did not offer at its rate is not held)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from bench.bench_fullpath import (
    AGENT_PT,
    AGENT_VOICE_HZ,
    CALLER_PT,
    CALLER_VOICE_HZ,
    Bench,
    Config,
    Plateau,
    Report,
    Sample,
    Step,
    sipp_placing_s,
)
from gateway.media.g711 import alaw_decode, ulaw_decode

HEADERS = 14 + 20 + 8  # Ethernet, IPv4, UDP


def rtp_packets(path: Path) -> list[tuple[float, int, bytes]]:
    """(time, payload type, payload) of every packet of a pcap write_rtp_pcap made."""
    data, offset, out = path.read_bytes(), 24, []
    while offset < len(data):
        sec, usec, length, _ = struct.unpack_from("<IIII", data, offset)
        rtp = data[offset + 16 + HEADERS : offset + 16 + length]
        out.append((sec + usec / 1e6, rtp[1] & 0x7F, rtp[12:]))
        offset += 16 + length
    return out


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / 8000)[spectrum.argmax()])


def test_each_side_talks_in_its_own_law_and_tone_for_the_whole_call(tmp_path: Path) -> None:
    bench = Bench(Config(), tmp_path, print)
    for who, hz, pt, decode in (
        ("caller", CALLER_VOICE_HZ, CALLER_PT, alaw_decode),
        ("agent", AGENT_VOICE_HZ, AGENT_PT, ulaw_decode),
    ):
        packets = rtp_packets(bench.voice(who, hz, pt, 30_000))
        assert len(packets) == 1500, "a frame every 20 ms for 30 s"
        times = np.array([t for t, _, _ in packets])
        assert np.allclose(np.diff(times), 0.02, atol=1e-5), "no gap anywhere"
        assert {p for _, p, _ in packets} == {pt}
        assert {len(payload) for _, _, payload in packets} == {160}
        last_second = np.concatenate([decode(payload) for _, _, payload in packets[-50:]])
        assert dominant_hz(last_second) == hz, f"the {who} still talks at the end"
        assert np.sqrt(np.mean(last_second.astype(np.float64) ** 2)) > 4000


def _stat_rows(path: Path, created_each_second: list[int]) -> None:
    """A SIPp -trace_stat file with one row a second (the columns the bench reads)."""
    start = 1796068583.242043
    lines = ["StartTime;CurrentTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C)"]
    for i, created in enumerate(created_each_second):
        lines.append(
            f"2026-11-30\t19:56:23.242043\t{start};2026-11-30\t19:56:2{i}.0\t{start + i + 0.004};"
            f"{created};0;0"
        )
    path.write_text("\n".join(lines) + "\n")


def test_a_step_sipp_placed_slower_than_asked_is_not_held(tmp_path: Path) -> None:
    stats = tmp_path / "callers.csv"
    _stat_rows(stats, [0, 4, 9, 14, 19, 24, 30])  # 30 calls at 5/s: placed in 6 s
    on_time = sipp_placing_s(stats, 30)
    assert on_time is not None and abs(on_time - 6.004) < 1e-6
    assert sipp_placing_s(stats, 31) is None, "never placed them all"
    held = Step(rate=5, offered=30, carried=30, placed_rate=30 / on_time)
    assert held.placed_at_rate
    slow = Step(rate=5, offered=30, carried=30, placed_rate=30 / 12)  # twice as long as asked
    assert not slow.placed_at_rate
    assert not Step(rate=5, offered=30, carried=30).placed_at_rate, "placing unknown"
    report = Report(config=Config(), steps=[held, Step(10, 60, 60, placed_rate=4.0)])
    assert report.held_rate == 5, "10/s carried everything, but SIPp offered it at 4/s"


def _gateway(calls: int, buckets: dict[str, int], skipped: int) -> str:
    """The gateway's /metrics as far as the plateau reads it."""
    lines = [f'hotline_active_calls{{site="local",state="bridged"}} {calls}.0']
    lines += [
        f'hotline_media_tick_lateness_seconds_bucket{{le="{le}",site="local"}} {n}.0'
        for le, n in buckets.items()
    ]
    lines.append(f'hotline_media_skipped_frames_total{{site="local"}} {skipped}.0')
    return "\n".join(lines) + "\n"


def test_the_plateau_is_what_happened_between_its_two_samples() -> None:
    start = Sample(
        100.0, _gateway(150, {"0.001": 900, "0.005": 990, "0.1": 1000, "+Inf": 1000}, 3), 50, 20
    )
    end = Sample(
        120.0, _gateway(149, {"0.001": 1700, "0.005": 1980, "0.1": 2000, "+Inf": 2000}, 3), 62, 26
    )
    plateau = Plateau.between(start, end)
    assert plateau.seconds == 20 and plateau.calls == (150, 149)
    assert plateau.gateway_core == 0.6 and plateau.sipp_core == 0.3
    assert plateau.on_time == 0.99, "990 of the 1,000 ticks in between were at most 5 ms late"
    assert plateau.late_p99_ms == 5.0 and plateau.skipped_frames == 0
    assert "gateway 60% of a core" in str(plateau) and "lateness p99 <= 5 ms" in str(plateau)
