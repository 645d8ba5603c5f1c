"""gateway/priority.py against the real kernel: the loop's thread at SCHED_RR and the threads it
starts at normal priority, a refusal that names what is missing, the drop to the service user.
Taking real-time priority and switching users need root (CAP_SYS_NICE, CAP_SETUID); the
refusals are made with `setpriv` taking those capabilities away."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gateway.priority import PriorityError, become, loop_priority, raise_loop_priority, rt_budget_us

SERVICES = Path(__file__).resolve().parents[2] / "services"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SYS_NICE, CAP_SETUID)")


def in_thread(work: object) -> dict[str, object]:
    """Run `work(results)` in a thread of its own (its scheduling dies with it)."""
    results: dict[str, object] = {}
    thread = threading.Thread(target=work, args=(results,))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return results


@root_only
def test_only_the_loop_thread_runs_at_realtime_priority() -> None:
    def loop_thread(results: dict[str, object]) -> None:
        raise_loop_priority(7)
        results["loop"] = loop_priority()
        results["policy"] = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
        results |= in_thread(lambda child: child.update(started=loop_priority()))

    results = in_thread(loop_thread)
    assert results == {"loop": 7, "policy": os.SCHED_RR, "started": 0}
    assert loop_priority() == 0  # the thread that asked for nothing


def run_python(code: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": str(SERVICES)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@root_only
def test_refused_priority_says_what_it_needs() -> None:
    proc = run_python(
        """
        from gateway.priority import PriorityError, loop_priority, raise_loop_priority
        try:
            raise_loop_priority(10)
        except PriorityError as exc:
            print(exc, loop_priority())
        """,
        "setpriv",
        "--bounding-set=-sys_nice",
        "--inh-caps=-sys_nice",
    )
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout.strip()
    assert message.startswith(
        "HOTLINE_GATEWAY_REALTIME_PRIORITY=10: the kernel refused real-time scheduling "
        "(Operation not permitted)"
    )
    assert "CAP_SYS_NICE" in message and "gateway.realtimePriority" in message
    assert message.endswith(" 0")  # and the thread runs on at normal priority


@root_only
def test_become_drops_to_the_user_and_keeps_the_priority() -> None:
    proc = run_python(
        """
        import os
        from gateway.priority import become, loop_priority, raise_loop_priority
        os.setgroups([0, 20, 4242])  # a pod's supplementary groups: the devices' group...
        raise_loop_priority(5)
        become(65534, 65533)
        print(os.getresuid(), os.getresgid(), os.getgroups(), loop_priority())
        try:
            os.setuid(0)
        except PermissionError:
            print("for good")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [
        "(65534, 65534, 65534) (65533, 65533, 65533) [20, 4242] 5",  # ... kept, root's not
        "for good",
    ]


@root_only
def test_become_without_the_capability_to_switch_says_so() -> None:
    proc = run_python(
        """
        from gateway.priority import PriorityError, become
        try:
            become(65534, 65534)
        except PriorityError as exc:
            print(exc)
        """,
        "setpriv",
        "--bounding-set=-setuid,-setgid",
        "--inh-caps=-setuid,-setgid",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "HOTLINE_GATEWAY_USER=65534:65534: could not switch to that user (Operation not "
        "permitted); the gateway needs CAP_SETUID and CAP_SETGID for it"
    )


def test_become_as_a_user_other_than_root_is_refused() -> None:
    if os.geteuid() == 0:
        proc = run_python(
            """
            import os
            from gateway.priority import PriorityError, become
            os.setresuid(65534, 65534, 65534)
            try:
                become(1000, 1000)
            except PriorityError as exc:
                print(exc)
            """
        )
        assert proc.returncode == 0, proc.stderr
        message = proc.stdout.strip()
    else:
        with pytest.raises(PriorityError) as raised:
            become(os.geteuid() + 1, os.getegid())
        message = str(raised.value)
    assert message.startswith("HOTLINE_GATEWAY_USER=")
    assert "not root" in message and "leave it empty" in message


V1_CPU = Path("/sys/fs/cgroup/cpu")


@root_only
@pytest.mark.skipif(
    not (V1_CPU / "cpu.rt_runtime_us").exists(), reason="no cgroup-v1 real-time group scheduling"
)
def test_a_cgroup_without_realtime_budget_is_named_as_the_cause() -> None:
    group = V1_CPU / f"hotline-test-{os.getpid()}"
    group.mkdir()  # a new group's cpu.rt_runtime_us is 0, as a container's is by default
    try:
        proc = run_python(
            f"""
            import os
            from pathlib import Path
            from gateway.priority import PriorityError, raise_loop_priority, rt_budget_us
            Path({str(group)!r}, "tasks").write_text(str(os.getpid()))
            print(rt_budget_us())
            try:
                raise_loop_priority(10)
            except PriorityError as exc:
                print(exc)
            """
        )
    finally:
        group.rmdir()
    assert proc.returncode == 0, proc.stderr
    budget, message = proc.stdout.strip().split("\n")
    assert budget == "0"
    assert "(Operation not permitted). This process's cgroup has no real-time budget" in message


def test_realtime_budget_read_from_the_process_cgroup(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    (cgroup / "cpu,cpuacct" / "kubepods" / "pod1").mkdir(parents=True)
    (cgroup / "cpu,cpuacct" / "kubepods" / "pod1" / "cpu.rt_runtime_us").write_text("0\n")
    (cgroup / "cpu,cpuacct" / "cpu.rt_runtime_us").write_text("950000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("5:memory:/kubepods/pod1\n4:cpu,cpuacct:/kubepods/pod1\n0::/\n")
    assert rt_budget_us(proc, cgroup) == 0  # the host's view of the pod's group
    proc.write_text("4:cpu,cpuacct:/kubepods/pod2\n")
    assert rt_budget_us(proc, cgroup) == 950000  # a namespace's view: its own group at the root
    proc.write_text("0::/system.slice/x\n")  # cgroup v2: no per-group real-time budget
    assert rt_budget_us(proc, cgroup) is None
    assert rt_budget_us(tmp_path / "absent", cgroup) is None
