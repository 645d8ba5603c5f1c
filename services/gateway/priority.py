"""Real-time scheduling for the gateway's event loop (HOTLINE_GATEWAY_REALTIME_PRIORITY), and
the user the gateway becomes once it has it (HOTLINE_GATEWAY_USER).

Every frame the gateway sends leaves on a tick of its one event loop. Where other processes
want the same CPUs (the other services, other pods, a load generator) the kernel's fair
scheduler makes that loop wait its turn, and the wait is jitter added to every call's audio:
at 200 bridged, recorded calls on the 2-core bench machine the tick lateness p99 was ≤ 50 ms
under normal scheduling and ≤ 3 ms under SCHED_RR (docs/performance.md, section 21). This is
what Asterisk's `-p` and FreeSWITCH's `-rp` do.

Only the loop's thread is raised: threads it starts later (the spool's disk writer, executor
threads, gRPC's) begin at normal priority (`SCHED_RESET_ON_FORK`), so a disk wait or a DNS
lookup never holds a CPU at real-time priority. The kernel's real-time throttling
(`/proc/sys/kernel/sched_rt_runtime_us`, 95 % by default) keeps a runaway loop from taking a
CPU for good.

Taking real-time priority needs CAP_SYS_NICE (or an RLIMIT_RTPRIO at least the priority). A
container whose user is not root cannot hold a capability (Kubernetes sets no ambient ones), so
the chart starts such a gateway as root with only SYS_NICE, SETUID and SETGID, and the gateway
drops to its own user (`become`) before it opens any file: the spool and the state stay owned
by that user, and nothing else runs as root.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.service import StartupError

__all__ = ["PriorityError", "become", "loop_priority", "raise_loop_priority", "rt_budget_us"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


class PriorityError(StartupError):
    """The kernel refused the scheduling or the user the settings ask for."""


def raise_loop_priority(priority: int) -> None:
    """Run the calling thread (the event loop's) under SCHED_RR at `priority` (1-99); threads
    and processes it creates later start at normal priority. PriorityError says why not."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as exc:
        why = (
            f"It needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least {priority}; in Kubernetes "
            "set it through the chart's gateway.realtimePriority, which grants SYS_NICE"
        )
        if rt_budget_us() == 0:
            why = (
                "This process's cgroup has no real-time budget (cpu.rt_runtime_us is 0: the "
                "kernel, built with CONFIG_RT_GROUP_SCHED, gives each cgroup its own, and "
                "container runtimes give none unless asked, e.g. podman --cpu-rt-runtime)"
            )
        raise PriorityError(
            f"HOTLINE_GATEWAY_REALTIME_PRIORITY={priority}: the kernel refused real-time "
            f"scheduling ({exc.strerror}). {why} (docs/deploy.md); 0 runs the gateway at "
            "normal priority"
        ) from None


def rt_budget_us(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT
) -> int | None:
    """The real-time runtime (µs per period) the cgroup-v1 `cpu` controller gives this
    process's cgroup; None where there is no such limit to read (cgroup v2, no RT group
    scheduling)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" not in controllers.split(","):
            continue
        mount = root / controllers
        for directory in (mount / path.lstrip("/"), mount):  # the host's view, a namespace's
            try:
                return int((directory / "cpu.rt_runtime_us").read_text())
            except (OSError, ValueError):
                continue
    return None


def loop_priority() -> int:
    """The calling thread's real-time priority; 0 under normal scheduling."""
    if os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK in (os.SCHED_RR, os.SCHED_FIFO):
        return os.sched_getparam(0).sched_priority
    return 0


def become(uid: int, gid: int) -> None:
    """Drop from root to `uid`:`gid` for good, keeping the supplementary groups it was started
    with but root's (what the pod grants, e.g. the DAHDI devices' group); PriorityError says
    why not. A scheduling policy taken before stays."""
    if (os.getuid(), os.getgid()) == (uid, gid) and os.geteuid() == uid:
        return
    if os.geteuid() != 0:
        raise PriorityError(
            f"HOTLINE_GATEWAY_USER={uid}:{gid}: the gateway runs as uid {os.geteuid()}, not "
            "root; the setting is for a gateway started as root to take real-time priority "
            "(leave it empty otherwise)"
        )
    try:
        os.setgroups([g for g in os.getgroups() if g != 0])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise PriorityError(
            f"HOTLINE_GATEWAY_USER={uid}:{gid}: could not switch to that user ({exc.strerror}); "
            "the gateway needs CAP_SETUID and CAP_SETGID for it"
        ) from None
