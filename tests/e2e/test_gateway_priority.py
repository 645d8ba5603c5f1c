"""A gateway asked for real-time priority (HOTLINE_GATEWAY_REALTIME_PRIORITY) runs its event
loop, and only it, under SCHED_RR, says so in /metrics and answers SIP; where the kernel
refuses, it stops at start with the reason instead of running on without it. A stack of its
own: the broker and a gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from common.stack import REPO_ROOT, Stack
from gateway.priority import rt_budget_us
from tests.e2e.conftest import metric, options
from tests.ports import GATEWAY_PRIORITY, hotline_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.geteuid() != 0 or rt_budget_us() == 0,
        reason="needs root in a cgroup with a real-time budget",
    ),
]

PORTS = GATEWAY_PRIORITY.ports


def policy(tid: int) -> tuple[int, int]:
    """(scheduling policy without the reset-on-fork flag, real-time priority) of a thread."""
    return (
        os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK,
        os.sched_getparam(tid).sched_priority,
    )


def test_the_event_loop_alone_runs_at_realtime_priority(tmp_path: Path) -> None:
    env = hotline_env(GATEWAY_PRIORITY) | {
        "HOTLINE_VAR_DIR": str(tmp_path),
        "HOTLINE_PROMPT_DIR": str(REPO_ROOT / "var" / "prompts"),
        "HOTLINE_GATEWAY_REALTIME_PRIORITY": "10",
    }
    stack = Stack(env=env, log_dir=tmp_path / "log", kafka_port=PORTS["KAFKA"])
    try:
        stack.start(services=("gateway",))
        stack.wait_ready(("gateway",), timeout_s=60)
        pid = stack.procs["gateway"].pid
        assert policy(pid) == (os.SCHED_RR, 10), "the event loop (the main thread)"
        others = {int(t) for t in os.listdir(f"/proc/{pid}/task")} - {pid}
        assert len(others) >= 3, "gRPC's, libuv's and the spool's threads"
        assert {tid: policy(tid) for tid in others} == dict.fromkeys(others, (os.SCHED_OTHER, 0))
        assert options(PORTS["SIP"], 17098).startswith("SIP/2.0 200 OK\r\n")
        url = f"http://127.0.0.1:{PORTS['GATEWAY_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            metrics = resp.read().decode()
        assert metric(metrics, "hotline_media_loop_realtime_priority", site="local") == 10
    finally:
        stack.stop()


def test_a_refused_priority_stops_the_gateway_at_start(tmp_path: Path) -> None:
    env = (
        os.environ
        | hotline_env(GATEWAY_PRIORITY)
        | {"HOTLINE_VAR_DIR": str(tmp_path), "HOTLINE_GATEWAY_REALTIME_PRIORITY": "10"}
    )
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]
        + [sys.executable, "-m", "gateway"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "gateway: HOTLINE_GATEWAY_REALTIME_PRIORITY=10: the kernel refused real-time "
        "scheduling (Operation not permitted). It needs CAP_SYS_NICE"
    ), proc.stderr[-2000:]
    assert not (tmp_path / "gateway-state.sqlite").exists(), "stopped before opening anything"
