"""Media quality of finished legs as metrics: loss, jitter and an E-model MOS estimate per leg
role, and each seat's last MOS - what an SRE needs to see a bad network before agents
complain. Labels are the leg's role (caller, agent) and the seat (an extension: bounded by
the number of seats), never a call id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gateway.media.rtp import RtpStats

__all__ = ["LEG_ROLES", "observe_leg", "prepare"]

LEG_ROLES = ("caller", "agent")

LOST = Counter(
    "hotline_rtp_packets_lost_total", "RTP packets lost on finished legs", ["site", "leg"]
)
EXPECTED = Counter(
    "hotline_rtp_packets_expected_total", "RTP packets expected on finished legs", ["site", "leg"]
)
JITTER = Histogram(
    "hotline_rtp_jitter_seconds",
    "Interarrival jitter (RFC 3550 A.8) of finished legs",
    ["site", "leg"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2),
)
MOS = Histogram(
    "hotline_rtp_mos",
    "E-model MOS estimate (G.107) of finished legs",
    ["site", "leg"],
    buckets=(1.0, 2.0, 2.5, 3.0, 3.3, 3.6, 3.9, 4.1, 4.3, 4.5),
)
SEAT_MOS = Gauge("hotline_seat_mos", "MOS estimate of each seat's last call", ["site", "seat"])


def prepare(site: str) -> None:
    """Create the series at zero, so a rate over them is defined before the first leg ends."""
    for leg in LEG_ROLES:
        LOST.labels(site, leg)
        EXPECTED.labels(site, leg)
        JITTER.labels(site, leg)
        MOS.labels(site, leg)


def observe_leg(stats: RtpStats, leg: str, site: str, seat: str = "") -> None:
    """Count a finished leg's media (no-op for a leg that never received RTP)."""
    expected = stats.expected_total
    if expected <= 0:
        return
    LOST.labels(site, leg).inc(max(0, stats.lost))
    EXPECTED.labels(site, leg).inc(expected)
    JITTER.labels(site, leg).observe(stats.jitter_ms / 1000.0)
    mos = stats.mos_estimate()
    MOS.labels(site, leg).observe(mos)
    if seat:
        SEAT_MOS.labels(site, seat).set(mos)
