"""The full-path benchmark (`make bench`, bench/bench_fullpath.py) at a tiny rate, so its
harness cannot rot: SIPp callers through the IVR and the ACD to SIPp agent phones with media
and recording, and the direct SIPp baseline. It asserts that no call failed and that every
quantity the benchmark prints was measured; timing figures stay in `make bench`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_fullpath import PROCESSES, Config, run
from tests.ports import BENCH_FULLPATH_TEST

pytestmark = pytest.mark.e2e

PORTS = BENCH_FULLPATH_TEST.ports


def test_full_path_bench_at_a_tiny_rate_measures_everything(tmp_path: Path) -> None:
    config = Config(
        rates=(2,),
        step_s=3,
        agents=8,
        talk_ms=1000,
        baseline_rates=(20,),
        baseline_step_s=1,
        ports=PORTS,
        sipp_base_port=17700,
        rtp=BENCH_FULLPATH_TEST.rtp,
        settle_s=1,
        keep_dir=tmp_path,
    )
    report = run(config)

    (step,) = report.steps
    assert (step.offered, step.carried, step.failed, step.shed) == (6, 6, 0, 0), step
    assert step.placed_at_rate, f"SIPp placed the calls at {step.placed_rate}/s"
    assert len(step.invite_200_ms) == 6, "INVITE -> 200 of every call"
    assert len(step.ring_ms) == 6, "digit -> agent ring of every call"
    assert step.peak_calls >= 1 and step.peak_ports >= 2
    assert step.rtp_expected > 0 and step.rtp_lost >= 0
    assert step.tick_late_p99_ms is not None and step.skipped_frames >= 0
    assert step.quiet_s is not None, "every call and media port released after the step"
    assert set(step.cpu_ms_per_call) == set(PROCESSES)
    assert step.cpu_ms_per_call["gateway"] > 0
    assert step.sipp_cpu_ms_per_call > 0, "the load generator's own CPU, counted apart"
    assert step.broker_records > 0, "the agents' states were on the broker before the calls"
    assert report.held_rate == 2
    assert report.baseline_rate == 20, report.baseline
    assert report.calls_possible_idle == 250, "1,000 ports: 500 even ports, 250 bridged calls"
    assert 0 < report.rss_idle_mb <= report.rss_peak_mb and report.rss_after_mb > 0
    assert (report.cdrs, report.cdrs_recorded) == (6, 6), "one CDR with a recording per call"
    assert report.events_published > 0 and all(report.events_consumed.values())
