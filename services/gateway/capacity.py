"""How much the gateway can take: its default limits sized from the machine, and media ports
in use and free and the calls still possible, as Prometheus gauges.

Every call leg holds one even RTP port, and a bridged call two (caller and agent), so the RTP
range bounds the concurrent calls; each port is one socket, so the descriptor limit does too;
and the CPU bounds the call rate. `machine_limits` turns those into the gateway's default caps
(HOTLINE_GATEWAY_MAX_CALLS / _MAX_CPS override them): a call admitted under them never meets
"No Media Ports" when its agent is rung. SREs watch `hotline_gateway_calls_possible`, and the
fault soak checks that no port stays in use.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway.media.clock import LATENESS_BUCKETS_S, FrameClock
from gateway.media.endpoint import PortAllocator

__all__ = [
    "CPS_PER_CORE",
    "USEFUL_CORES",
    "MediaClockCollector",
    "MediaPortCollector",
    "cpu_cores",
    "machine_limits",
]

#: New calls per second one core carries through the gateway on the full call path (IVR,
#: queue, agent, recording), with headroom: bench/bench_fullpath.py measures it
#: (docs/performance.md).
CPS_PER_CORE = 25.0
#: CPUs past which the default call rate stops growing: the gateway handles calls on one event
#: loop (one core: SIP, media ticks, RTP syscalls), with only its disk and gRPC threads beside
#: it, so it saturates at ~60-70 new calls/s however many CPUs the node has (docs/performance.md,
#: section 14); scaling with every CPU admitted calls on a big node that it could not carry.
USEFUL_CORES = 2.0
#: descriptors kept for everything but RTP (SIP, gRPC, Kafka, files, the spool)
FD_RESERVE = 256
LEGS_PER_CALL = 2


def cpu_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> float:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container
    limit) when there is one."""
    cores = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = cgroup.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(0.1, min(cores, int(quota) / int(period)))


def machine_limits(rtp_low: int, rtp_high: int, cores: float | None = None) -> tuple[int, float]:
    """(concurrent calls, new calls per second) this machine gives the gateway by default: the
    calls its RTP ports and descriptors hold, and CPS_PER_CORE per CPU up to USEFUL_CORES."""
    even_ports = len(range(rtp_low + (rtp_low & 1), rtp_high + 1, 2))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_fds = even_ports if soft == resource.RLIM_INFINITY else max(0, soft - FD_RESERVE)
    max_calls = max(1, min(even_ports, by_fds) // LEGS_PER_CALL)
    usable = min(cpu_cores() if cores is None else cores, USEFUL_CORES)
    return max_calls, round(CPS_PER_CORE * usable, 1)


class MediaPortCollector(Collector):
    """`hotline_rtp_ports{state="in_use"|"free"}` of the gateway's RTP range;
    `hotline_gateway_calls_possible`: the new calls it can still take, the lesser of the
    bridged calls the free ports hold and the admission ceiling's headroom; and what it takes at
    most, `hotline_gateway_calls_max` (concurrent calls: the ceiling, within the bridged calls the
    whole range holds) and `hotline_gateway_calls_per_second_max` (its rate cap, when it has one),
    so that a dashboard or an alert can say how near the site runs to its capacity."""

    def __init__(
        self,
        allocator: PortAllocator,
        site: str,
        headroom: Callable[[], int | None] = lambda: None,
        *,
        max_calls: int = 0,
        max_cps: float = 0.0,
    ) -> None:
        self.allocator, self.site, self.headroom = allocator, site, headroom
        self.max_calls, self.max_cps = max_calls, max_cps

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hotline_rtp_ports",
            "RTP ports of the gateway's range by state",
            labels=["state", "site"],
        )
        in_use = self.allocator.in_use
        family.add_metric(["in_use", self.site], in_use)
        free = self.allocator.capacity - in_use
        family.add_metric(["free", self.site], free)
        yield family
        possible = free // LEGS_PER_CALL
        headroom = self.headroom()
        if headroom is not None:
            possible = min(possible, headroom)
        calls = GaugeMetricFamily(
            "hotline_gateway_calls_possible",
            "New calls the gateway can still take: free RTP ports for a bridged call each, "
            "within its concurrent-call ceiling",
            labels=["site"],
        )
        calls.add_metric([self.site], possible)
        yield calls
        by_ports = self.allocator.capacity // LEGS_PER_CALL
        most = GaugeMetricFamily(
            "hotline_gateway_calls_max",
            "Concurrent calls the gateway takes at most: its ceiling (HOTLINE_GATEWAY_MAX_CALLS "
            "or sized from the machine), within the bridged calls its RTP range holds",
            labels=["site"],
        )
        most.add_metric([self.site], min(by_ports, self.max_calls) if self.max_calls else by_ports)
        yield most
        if self.max_cps:
            rate = GaugeMetricFamily(
                "hotline_gateway_calls_per_second_max",
                "New calls per second the gateway admits at most (HOTLINE_GATEWAY_MAX_CPS or "
                "sized from the machine)",
                labels=["site"],
            )
            rate.add_metric([self.site], self.max_cps)
            yield rate


class MediaClockCollector(Collector):
    """How late the 20 ms media clock fires (`hotline_media_tick_lateness_seconds`, the jitter
    the gateway adds to every frame it sends) and the frames it skipped after a stall
    (`hotline_media_skipped_frames_total`): the gateway's own share of frame loss and jitter;
    and the real-time priority its event loop runs at (`hotline_media_loop_realtime_priority`,
    0: normal scheduling), which decides how much of that jitter other processes cause."""

    def __init__(self, clock: FrameClock, site: str, realtime_priority: int = 0) -> None:
        self.clock, self.site, self.realtime_priority = clock, site, realtime_priority

    def collect(
        self,
    ) -> Iterator[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily]:
        counts, cumulative, buckets = self.clock.lateness, 0, []
        for bound, n in zip((*map(str, LATENESS_BUCKETS_S), "+Inf"), counts, strict=True):
            cumulative += n
            buckets.append((bound, float(cumulative)))
        lateness = HistogramMetricFamily(
            "hotline_media_tick_lateness_seconds",
            "How late each 20 ms media tick fired: the jitter the gateway adds to sent frames",
            labels=["site"],
        )
        lateness.add_metric([self.site], buckets, self.clock.lateness_sum)
        yield lateness
        skipped = CounterMetricFamily(
            "hotline_media_skipped_frames",
            "Frames the media clock skipped after the event loop stalled (no audio sent)",
            labels=["site"],
        )
        skipped.add_metric([self.site], self.clock.skipped_frames)
        yield skipped
        priority = GaugeMetricFamily(
            "hotline_media_loop_realtime_priority",
            "SCHED_RR priority of the event loop sending every frame (0: normal scheduling)",
            labels=["site"],
        )
        priority.add_metric([self.site], self.realtime_priority)
        yield priority
