"""The full-path benchmark's voices: each side plays its own tone in its own law for the whole
call (every 20 ms frame), so the gateway bridges, transcodes and records audio all along; the
sample pcap Debian ships held 4.7 s, and long calls were measured mostly silent."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from bench.bench_fullpath import AGENT_PT, AGENT_VOICE_HZ, CALLER_PT, CALLER_VOICE_HZ, Bench, Config
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
