"""The gateway's capacity: default limits sized from the machine (RTP range, descriptors,
CPUs and a container's CPU quota) and the capacity figures in /metrics."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.capacity import (
    CPS_PER_CORE,
    USEFUL_CORES,
    MediaClockCollector,
    MediaPortCollector,
    cpu_cores,
    machine_limits,
)
from gateway.channels.sip.admission import Admission, AdmissionLimits
from gateway.media.clock import FrameClock
from gateway.media.endpoint import PortAllocator


def test_calls_follow_the_rtp_range_and_the_rate_the_cpus() -> None:
    calls, cps = machine_limits(20000, 25999, cores=2)
    assert calls == min(3000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 256) // 2
    assert cps == 2 * CPS_PER_CORE
    assert machine_limits(20000, 20003, cores=0.5) == (1, CPS_PER_CORE / 2)


def test_the_rate_stops_growing_past_the_cores_one_gateway_can_use() -> None:
    """One event loop handles the calls: a 32-CPU node does not make it carry 16x more."""
    at_most = USEFUL_CORES * CPS_PER_CORE
    assert machine_limits(20000, 25999, cores=USEFUL_CORES)[1] == at_most
    assert machine_limits(20000, 25999, cores=32)[1] == at_most
    assert machine_limits(20000, 25999, cores=1)[1] < at_most


def test_descriptors_bound_the_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert machine_limits(20000, 29999, cores=1)[0] == (1024 - 256) // 2


def test_a_container_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("50000 100000\n")
    assert cpu_cores(quota) == 0.5
    quota.write_text("max 100000\n")
    assert cpu_cores(quota) == cpu_cores(tmp_path / "absent") >= 1


def _metrics(collector: MediaPortCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_calls_possible_is_free_ports_per_bridged_call_within_the_ceiling() -> None:
    allocator = PortAllocator(31200, 31219)  # 10 even ports: 5 bridged calls
    admission = Admission(AdmissionLimits(gateway_max_calls=3))
    collector = MediaPortCollector(allocator, "hq", admission.headroom)
    assert 'hotline_gateway_calls_possible{site="hq"} 3.0' in _metrics(collector)
    held = [allocator.allocate("127.0.0.1") for _ in range(6)]
    text = _metrics(collector)
    assert 'hotline_rtp_ports{site="hq",state="free"} 4.0' in text
    assert 'hotline_gateway_calls_possible{site="hq"} 2.0' in text
    for port in held:
        allocator.release(port)
    no_ceiling = MediaPortCollector(allocator, "hq")
    assert 'hotline_gateway_calls_possible{site="hq"} 5.0' in _metrics(no_ceiling)


def test_the_most_the_gateway_takes_is_exported_beside_what_it_can_still_take() -> None:
    """The ceiling within the range's bridged calls, and the rate cap only when there is one:
    an SRE divides calls possible by calls max to see how near capacity the site runs."""
    allocator = PortAllocator(31200, 31219)  # 10 even ports: 5 bridged calls
    under = MediaPortCollector(allocator, "hq", max_calls=3, max_cps=12.5)
    text = _metrics(under)
    assert 'hotline_gateway_calls_max{site="hq"} 3.0' in text
    assert 'hotline_gateway_calls_per_second_max{site="hq"} 12.5' in text
    over = _metrics(MediaPortCollector(allocator, "hq", max_calls=400))
    assert 'hotline_gateway_calls_max{site="hq"} 5.0' in over  # the ports bound it
    assert "hotline_gateway_calls_per_second_max" not in over
    unset = _metrics(MediaPortCollector(allocator, "hq"))
    assert 'hotline_gateway_calls_max{site="hq"} 5.0' in unset


def test_tick_lateness_and_skipped_frames_are_exported() -> None:
    clock = FrameClock()
    clock.lateness[0] += 97  # on time (under 1 ms)
    clock.lateness[3] += 2  # 3-4 ms late
    clock.lateness[5] += 1  # 5-10 ms late
    clock.lateness_sum = 0.014
    clock.skipped_frames = 3
    registry = CollectorRegistry()
    registry.register(MediaClockCollector(clock, "hq"))
    text = generate_latest(registry).decode()
    assert 'hotline_media_tick_lateness_seconds_bucket{le="0.001",site="hq"} 97.0' in text
    assert 'hotline_media_tick_lateness_seconds_bucket{le="0.003",site="hq"} 97.0' in text
    assert 'hotline_media_tick_lateness_seconds_bucket{le="0.004",site="hq"} 99.0' in text
    assert 'hotline_media_tick_lateness_seconds_bucket{le="0.005",site="hq"} 99.0' in text
    assert 'hotline_media_tick_lateness_seconds_bucket{le="0.01",site="hq"} 100.0' in text
    assert 'hotline_media_tick_lateness_seconds_count{site="hq"} 100.0' in text
    assert 'hotline_media_skipped_frames_total{site="hq"} 3.0' in text
    assert 'hotline_media_loop_realtime_priority{site="hq"} 0.0' in text  # normal scheduling
    registry = CollectorRegistry()
    registry.register(MediaClockCollector(clock, "hq", realtime_priority=10))
    assert (
        'hotline_media_loop_realtime_priority{site="hq"} 10.0' in generate_latest(registry).decode()
    )


async def test_the_clock_counts_how_late_each_tick_fires() -> None:
    clock = FrameClock(interval=0.005)
    clock.start()
    await asyncio.sleep(0.06)
    clock.stop()
    assert sum(clock.lateness) == clock.ticks >= 5
    assert clock.lateness_sum >= 0
