"""`make run` keeps the platform up: a process that dies is restarted with back-off and
reported, the others keep running. Real child processes; time is passed in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.stack import Stack, Supervisor


class ScriptStack(Stack):
    """A stack whose 'services' are tiny scripts: `die` exits at once with 3, `live` sleeps."""

    def start_service(self, name: str) -> None:
        code = (
            "import sys; sys.exit(3)" if name.startswith("die") else "import time; time.sleep(60)"
        )
        self.procs[name] = subprocess.Popen([sys.executable, "-c", code])


@pytest.fixture
def stack(tmp_path: Path):  # noqa: ANN201
    made = ScriptStack(log_dir=tmp_path)
    yield made
    for proc in made.procs.values():
        proc.kill()
        proc.wait()


def settle(stack: Stack, name: str) -> None:
    stack.procs[name].wait(10)


def test_a_dead_process_is_restarted_with_growing_back_off(stack: ScriptStack) -> None:
    lines: list[str] = []
    sup = Supervisor(stack, lines.append, first_backoff_s=1, max_backoff_s=4)
    stack.start_service("die")
    stack.start_service("live")
    settle(stack, "die")
    live = stack.procs["live"]

    now = 100.0
    sup.check(now)
    assert "die exited with 3; restarting in 1s" in lines[-1]
    sup.check(now + 0.5)
    assert sup.restarts.get("die", 0) == 0, "restarted before its back-off elapsed"
    delays = []
    for _ in range(4):
        due = now + float(lines[-1].split("restarting in ")[1].split("s")[0])
        sup.check(due)  # restarts it
        assert lines[-1].startswith("die restarted")
        settle(stack, "die")
        now = due
        sup.check(now)  # notices the new death
        delays.append(int(lines[-1].split("restarting in ")[1].split("s")[0]))
    assert delays == [2, 4, 4, 4], "doubling, capped at max_backoff_s"
    assert sup.restarts["die"] == 4
    assert stack.procs["live"] is live and live.poll() is None, "the others keep running"


def test_back_off_starts_over_once_a_process_stayed_up(stack: ScriptStack) -> None:
    lines: list[str] = []
    sup = Supervisor(stack, lines.append, first_backoff_s=1, max_backoff_s=30, stable_s=60)
    stack.start_service("live")
    sup.check(0.0)
    stack.procs["live"].kill()
    stack.procs["live"].wait()
    sup.check(1.0)
    assert "restarting in 1s" in lines[-1]
    sup.check(2.0)  # restarted
    stack.procs["live"].kill()
    stack.procs["live"].wait()
    sup.check(3.0)
    assert "restarting in 2s" in lines[-1], "died again quickly: longer back-off"
    sup.check(5.0)  # restarted, now it stays up
    sup.check(5.0 + 61)  # stable for longer than stable_s
    stack.procs["live"].kill()
    stack.procs["live"].wait()
    sup.check(5.0 + 62)
    assert "restarting in 1s" in lines[-1], "after a stable minute the back-off starts over"
