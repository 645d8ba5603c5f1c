"""Full-path benchmark: SIPp callers to a DID, through the IVR (a DTMF digit picks the queue)
and the ACD to SIPp agent phones, with media and recording, at stepped call rates; and, in
the same run, SIPp calling SIPp directly (no Hotline) as the baseline.

Run: .venv/bin/python bench/bench_fullpath.py [--rates 10,20,40] [--step-s 10] [--agents 300]

The whole platform (Tansu broker and the five services) runs as `make run` runs it, on its own
ports and a throw-away var directory. One SIPp answers for every agent: it registers hundreds of
extensions from a generated extensions file and injection file, the agents are logged in and
made Ready at the ACD (as the CRM does), and each call it is offered rings, is answered after
`ring_ms` and hung up after `talk_ms`. Callers arrive at each rate for `step_s` seconds; a
caller not served by an agent within `max_wait_ms`, or refused, is a failed call.

It prints, per rate: offered / carried / failed / shed (503) calls; INVITE -> 200 (the IVR
answering) and digit -> agent ring (the caller's DTMF digit sent to the agent phone's INVITE,
i.e. IVR menu, Enqueue, routing and ConnectToEndpoint) p50/p99; the peak of concurrent calls
with media and recording; RTP loss seen by the gateway; CPU per call of each process; and the
stack's RSS (idle, peak, after). Then the highest rate held with 0 failures, next to the direct
SIPp baseline as a ratio. Every run is bounded in calls and in time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import yaml

from common.events import TOPICS
from common.replay import TopicSizes
from common.stack import Stack
from gateway.sip.digest import ha1
from hotline.v1 import acd_pb2, acd_pb2_grpc, events_pb2

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the tests' SIPp helpers are beside it
    sys.path.insert(0, str(REPO))
from tests.e2e.sip.pcap import write_rtp_pcap  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp") or "sipp"
DTMF_PCAP = "/usr/share/sip-tester/dtmf_2833_1.pcap"  # digit 1: the sales queue
#: what each side says (a tone each, at -12 dBFS) and in which law: the caller A-law, the agent
#: µ-law, so the gateway transcodes every frame it bridges, as between a carrier and a phone
CALLER_VOICE_HZ, CALLER_PT = 1000.0, 8
AGENT_VOICE_HZ, AGENT_PT = 600.0, 0
#: the caller talks this much longer than `talk_ms`: from the digit to the agent's answer
CALLER_EXTRA_MS = 5000
SERVICES = ("gateway", "acd", "ivr", "crm", "recorder")
PROCESSES = ("broker", *SERVICES)
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
PASSWORD = "bench-secret"  # every generated extension's SIP password (loopback only)

#: ports of the benchmark's own stack, in the block 15100-15199 of the tests' port plan
#: (tests/ports.py, whose unit test checks these too): none shared with `make run` or a test
#: stack, and all below the kernel's ephemeral range (32768-60999), where any outgoing
#: connection may take a port before the service binds it. The bench runs alone; its RTP
#: range is the gateway's default (20000-25999), which no test stack uses.
BENCH_PORTS = {
    "KAFKA": 15192,
    "SIP": 15160,
    "HTTP": 15180,
    "GATEWAY_GRPC_PORT": 15151,
    "ACD_GRPC_PORT": 15152,
    "IVR_GRPC_PORT": 15153,
    "CRM_GRPC_PORT": 15154,
    "RECORDER_GRPC_PORT": 15155,
    "GATEWAY_METRICS_PORT": 15101,
    "ACD_METRICS_PORT": 15102,
    "IVR_METRICS_PORT": 15103,
    "CRM_METRICS_PORT": 15104,
    "RECORDER_METRICS_PORT": 15105,
    "SIM_CONTROL_PORT": 15110,
}


@dataclass(frozen=True)
class Config:
    """One benchmark run; the defaults are `make bench`'s."""

    rates: tuple[float, ...] = (10, 20, 40, 60, 100, 150, 200, 300)
    step_s: float = 10.0
    agents: int = 300
    talk_ms: int = 2000
    ring_ms: int = 100
    wrap_up_s: float = 0.5
    max_wait_ms: int = 0  # a caller gives up after this long; 0: talk_ms + 15 s
    baseline_rates: tuple[float, ...] = (300, 1000, 3000)
    baseline_step_s: float = 3.0
    ports: dict[str, int] = field(default_factory=lambda: dict(BENCH_PORTS))
    sipp_base_port: int = 17500  # SIPp's own SIP/media ports: base .. base + 49
    rtp: tuple[int, int] | None = None  # None: the gateway's default RTP range
    env: dict[str, str] = field(default_factory=dict)  # more HOTLINE_* for every service
    #: stop stepping after the first rate whose calls failed other than by being shed (503),
    #: or after `shed_steps` rates that shed load; then the first rate once more, to show
    #: the stack recovers when the load drops
    stop_at_failure: bool = True
    shed_steps: int = 2
    settle_s: float = 10.0  # idle time after the last rate before the "after" RSS
    #: the load generator's niceness. On one machine SIPp's media threads (one a call playing
    #: its voice) take the CPU from the stack under test in bursts every 20 ms, and the
    #: gateway's media clock runs late for want of a core (150 calls: tick lateness p99 <= 100
    #: ms at 0, <= 10 ms at 19); at 19 a loaded machine slows SIPp instead, below the rate asked
    #: (`Step.placed_rate` tells). 0 keeps the rate steps comparable with earlier runs; 19 is
    #: for measuring how many calls one gateway holds (docs/performance.md, section 20).
    sipp_nice: int = 0
    #: seconds of each step's plateau to measure the media path on (0: none): from
    #: PLATEAU_AFTER_S after the step's last call was placed, when no call starts and, with
    #: talk_ms long enough, none ends (`Plateau`)
    plateau_s: float = 0.0
    keep_dir: Path | None = None  # where logs go (default: a temporary directory, removed)


#: after the step's last call is placed, its IVR menu and agent ring are over by then
PLATEAU_AFTER_S = 6.0
LATENESS = "hotline_media_tick_lateness_seconds"
SKIPPED = "hotline_media_skipped_frames_total"


@dataclass(frozen=True)
class Sample:
    """What the plateau is measured from, at one moment."""

    at: float  # monotonic
    gateway_metrics: str
    gateway_cpu_s: float
    sipp_cpu_s: float


@dataclass(frozen=True)
class Plateau:
    """The media path while calls only talk (none set up): how many were live, what the
    gateway and the load generator spent, and how late the gateway's media clock ran."""

    seconds: float
    calls: tuple[int, int]  # live calls at the start and at the end
    gateway_core: float  # share of one core
    sipp_core: float
    on_time: float  # share of the ticks at most 5 ms late
    late_p99_ms: float | None
    skipped_frames: float

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Plateau:
        dt = b.at - a.at
        ga, gb = a.gateway_metrics, b.gateway_metrics
        before, after = buckets(ga, LATENESS), buckets(gb, LATENESS)
        ticks = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
        within = after.get(0.005, 0.0) - before.get(0.005, 0.0)
        p99 = histogram_p99(before, after)
        return cls(
            seconds=dt,
            calls=(
                int(metric(ga, "hotline_active_calls")),
                int(metric(gb, "hotline_active_calls")),
            ),
            gateway_core=(b.gateway_cpu_s - a.gateway_cpu_s) / dt,
            sipp_core=(b.sipp_cpu_s - a.sipp_cpu_s) / dt,
            on_time=within / ticks if ticks else 0.0,
            late_p99_ms=None if p99 is None else p99 * 1000,
            skipped_frames=metric(gb, SKIPPED) - metric(ga, SKIPPED),
        )

    def __str__(self) -> str:
        late = "n/a" if self.late_p99_ms is None else f"<= {self.late_p99_ms:g} ms"
        return (
            f"plateau {self.seconds:.0f}s, live calls {self.calls[0]} -> {self.calls[1]}: "
            f"gateway {self.gateway_core:.0%} of a core, SIPp {self.sipp_core:.0%}; ticks <= 5 ms "
            f"late {self.on_time:.1%}, lateness p99 {late}, skipped frames "
            f"{self.skipped_frames:.0f}"
        )


@dataclass
class Step:
    """What one rate gave."""

    rate: float
    offered: int = 0
    carried: int = 0
    failed: int = 0
    shed: int = 0
    elapsed_s: float = 0.0
    #: the rate SIPp really placed the calls at (0: it did not place them all); a step whose
    #: calls came slower than asked did not offer its rate and does not count as held
    placed_rate: float = 0.0
    invite_200_ms: list[float] = field(default_factory=list)
    ring_ms: list[float] = field(default_factory=list)
    peak_calls: int = 0
    peak_ports: int = 0
    rtp_lost: float = 0.0
    rtp_expected: float = 0.0
    tick_late_p99_ms: float | None = None  # jitter the gateway added to the frames it sent
    skipped_frames: float = 0.0  # frames the media clock skipped (event loop stalls)
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)
    #: the load generator's (both SIPps': callers and agent phones) CPU per call: on one
    #: machine it takes from the stack's CPU
    sipp_cpu_ms_per_call: float = 0.0
    rss_peak_mb: float = 0.0
    quiet_s: float | None = None  # how long until no call and no port was held after the step
    rss_quiet_mb: dict[str, float] = field(default_factory=dict)  # per process, once quiet
    #: records the broker held when the step began: the local broker's cost per event grows
    #: with them (docs/performance.md section 19), so a later step's broker CPU is not a
    #: fresh stack's
    broker_records: int = 0
    plateau: Plateau | None = None  # with Config.plateau_s

    @property
    def placed_at_rate(self) -> bool:
        """SIPp placed the calls at 90 % of the rate asked or more (its stats are per second,
        so a 1 s slack is allowed)."""
        if not self.placed_rate or not self.offered:
            return False
        return self.offered / self.placed_rate <= self.offered / self.rate / 0.9 + 1


@dataclass
class Baseline:
    rate: float
    offered: int
    carried: int
    failed: int
    elapsed_s: float


@dataclass
class Report:
    config: Config
    baseline: list[Baseline] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    recovery: Step | None = None  # the first rate again after an overloaded one
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    rss_by_process: dict[str, tuple[float, float]] = field(default_factory=dict)  # idle, after
    calls_possible_idle: float = 0.0  # the gateway's hotline_gateway_calls_possible, idle
    cdrs: int = 0
    cdrs_recorded: int = 0
    events_published: float = 0.0
    events_consumed: dict[str, float] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def held_rate(self) -> float:
        """The highest rate whose every call was carried (0 if none was)."""
        ok = [
            s.rate
            for s in self.steps
            if s.offered and s.failed == 0 and s.carried == s.offered and s.placed_at_rate
        ]
        return max(ok, default=0.0)

    @property
    def baseline_rate(self) -> float:
        ok = [b.rate for b in self.baseline if b.offered and b.failed == 0]
        return max(ok, default=0.0)


# ---- measuring ---------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its reaped children, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])


def rss_kb(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative counts per upper bound of a Prometheus histogram (summed over labels)."""
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = float(re.search(r'le="([^"]+)"', line).group(1))  # type: ignore[union-attr]
            out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def histogram_p99(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile of what was observed
    between two scrapes (None: nothing observed)."""
    delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for bound in sorted(delta):
        if delta[bound] >= 0.99 * total:
            return bound
    return float("inf")


def read_log(path: Path, tag: str) -> dict[str, float]:
    """`TAG number sec usec` lines of a SIPp -log_file: number -> wall-clock time."""
    seen: dict[str, float] = {}
    if not path.exists():
        return seen
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[-4] == tag:
            seen.setdefault(parts[-3], float(parts[-2]) + float(parts[-1]) / 1e6)
    return seen


def sipp_totals(stat_file: Path) -> tuple[int, int, int]:
    """(calls started, successful, failed) from SIPp's last -trace_stat row."""
    with stat_file.open() as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    if not rows:
        return 0, 0, 0
    last = rows[-1]
    return int(last["TotalCallCreated"]), int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])


def sipp_placing_s(stat_file: Path, total: int) -> float | None:
    """Seconds SIPp took to place `total` calls (from its -trace_stat rows, one a second), or
    None if it never did: a loaded machine can slow the load generator below the rate asked."""
    with stat_file.open() as f:
        for row in csv.DictReader(f, delimiter=";"):
            if int(row["TotalCallCreated"]) >= total:
                start = float(row["StartTime"].split("\t")[-1])
                return float(row["CurrentTime"].split("\t")[-1]) - start
    return None


def rtt_ms(directory: Path) -> list[float]:
    """Every response time SIPp wrote with -trace_rtt -rtt_freq 1 (rtd 1: INVITE -> 200)."""
    times: list[float] = []
    for path in directory.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    times.append(float(parts[1]))
                except ValueError:
                    continue
    return times


# ---- running -----------------------------------------------------------------------------
class Bench:
    """The stack, the agent phones and the callers of one run."""

    def __init__(self, config: Config, work: Path, say: Callable[[str], None]) -> None:
        self.c, self.work, self.say = config, work, say
        self.var = work / "var"
        self.max_wait_ms = config.max_wait_ms or config.talk_ms + 15000
        self.sipp_procs: list[subprocess.Popen[bytes]] = []
        self.phones: subprocess.Popen[bytes] | None = None  # the agent phones' SIPp
        p = config.sipp_base_port
        # SIPp takes its -mp port and the two above it (audio, video)
        self.agent_port, self.reg_port, self.caller_port = p, p + 10, p + 20
        self.base_uas_port, self.base_uac_port = p + 30, p + 40
        ports = config.ports
        env = {
            f"HOTLINE_{k}": str(v) for k, v in ports.items() if k not in ("KAFKA", "SIP", "HTTP")
        }
        env |= {
            "HOTLINE_SIP_PORT": str(ports["SIP"]),
            "HOTLINE_HTTP_PORT": str(ports["HTTP"]),
            "HOTLINE_VAR_DIR": str(self.var),
            "HOTLINE_GATEWAY_EXTENSIONS": str(work / "extensions.yaml"),
            "HOTLINE_WRAP_UP_S": str(config.wrap_up_s),
            "HOTLINE_LOG_LEVEL": "WARNING",
            # the benchmark measures capacity, not the per-source and per-trunk admission
            # policy: those limits sit far above the rates tried (see docs/performance.md)
            "HOTLINE_CALLS_PER_SOURCE_CPS": "100000",
            "HOTLINE_CALLS_PER_SOURCE_MAX": "100000",
            "HOTLINE_TRUNK_CPS": "100000",
            "HOTLINE_TRUNK_MAX_CALLS": "100000",
        }
        if config.rtp is not None:
            env |= {"HOTLINE_RTP_LOW": str(config.rtp[0]), "HOTLINE_RTP_HIGH": str(config.rtp[1])}
        env |= config.env
        self.stack = Stack(env=env, log_dir=self.var / "log", kafka_port=ports["KAFKA"])

    # -- helpers
    def metrics(self, service: str) -> str:
        port = self.c.ports[f"{service.upper()}_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.stack.procs.items()}

    def rss_each_mb(self) -> dict[str, float]:
        return {name: rss_kb(pid) / 1024 for name, pid in self.pids().items()}

    def broker_records(self) -> int:
        """Records on the broker's topics now (the offset after each partition's last)."""

        async def count() -> int:
            sizes = TopicSizes(f"127.0.0.1:{self.c.ports['KAFKA']}")
            try:
                return sum(n or 0 for n in (await sizes.sizes(list(TOPICS))).values())
            finally:
                await sizes.stop()

        return asyncio.run(count())

    def rss_mb(self) -> float:
        return sum(rss_kb(pid) for pid in self.pids().values()) / 1024

    def sipp(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        nice = self.c.sipp_nice
        proc = subprocess.Popen(
            ["nice", "-n", str(nice), SIPP, *argv] if nice else [SIPP, *argv],
            cwd=self.work,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        # Its own session is its own scheduling group where the kernel groups by session
        # (autogroup), and groups share the CPU alike whatever their members' niceness: the
        # group's niceness is what counts there.
        with contextlib.suppress(OSError):
            Path(f"/proc/{proc.pid}/autogroup").write_text(str(nice))
        self.sipp_procs.append(proc)
        return proc

    def render(self, scenario: str, **keys: str) -> Path:
        """SIPp does not substitute -key values in attributes (pause lengths, pcap paths), so
        the scenario is written out with them filled in."""
        text = (SCENARIOS / scenario).read_text()
        for k, v in keys.items():
            text = text.replace(f"[{k}]", v)
        out = self.work / scenario
        out.write_text(text)
        return out

    def sipp_cpu_s(self) -> float:
        """CPU seconds of the SIPps so far: the agent phones' (running) and every SIPp this
        process has waited for (the callers of the steps before, once each step ends)."""
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        phones = 0.0 if self.phones is None else cpu_ticks(self.phones.pid) / TICK
        return done.ru_utime + done.ru_stime + phones

    def sample(self, callers: subprocess.Popen[bytes]) -> Sample:
        """The gateway's metrics and CPU, and the running SIPps' CPU, now."""
        sipps = [callers] + ([self.phones] if self.phones is not None else [])
        return Sample(
            time.monotonic(),
            self.metrics("gateway"),
            cpu_ticks(self.pids()["gateway"]) / TICK,
            sum(cpu_ticks(p.pid) for p in sipps) / TICK,
        )

    def voice(self, who: str, hz: float, payload_type: int, ms: int) -> Path:
        """A pcap of `ms` of one side's voice for SIPp to play: a tone, every 20 ms frame
        sent, so the gateway bridges, transcodes and records audio for the whole call (Debian's
        sample pcap holds only 4.7 s of audio)."""
        t = np.arange(ms * 8) / 8000
        path = self.work / f"{who}_voice.pcap"
        write_rtp_pcap(path, (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16), payload_type)
        return path

    def stop_sipp(self) -> None:
        for proc in self.sipp_procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.sipp_procs.clear()

    # -- the baseline
    def baseline(self) -> list[Baseline]:
        """SIPp UAC -> SIPp UAS directly (built-in scenarios, 1 s calls, no media)."""
        results = []
        uas = self.sipp(
            ["-sn", "uas", "-i", "127.0.0.1", "-p", str(self.base_uas_port), "-nostdin"],
            "baseline-uas",
        )
        try:
            for rate in self.c.baseline_rates:
                total = int(rate * self.c.baseline_step_s)
                stats = self.work / f"baseline-{rate:g}.csv"
                start = time.monotonic()
                uac = self.sipp(
                    [
                        f"127.0.0.1:{self.base_uas_port}",
                        "-sn",
                        "uac",
                        "-i",
                        "127.0.0.1",
                        "-p",
                        str(self.base_uac_port),
                        "-r",
                        f"{rate:g}",
                        "-m",
                        str(total),
                        "-d",
                        "1000",
                        "-l",
                        str(int(rate * 5)),
                        "-nostdin",
                        "-timeout",
                        f"{int(self.c.baseline_step_s * 3 + 20)}s",
                        "-trace_stat",
                        "-stf",
                        str(stats),
                        "-fd",
                        "1",
                    ],
                    f"baseline-uac-{rate:g}",
                )
                uac.wait(self.c.baseline_step_s * 3 + 40)
                elapsed = time.monotonic() - start
                offered, carried, failed = sipp_totals(stats)
                # a rate SIPp could not even offer in time is not held either
                late = elapsed > self.c.baseline_step_s * 1.5 + 2.5
                results.append(
                    Baseline(rate, total, carried, failed + (total - carried) * late, elapsed)
                )
                self.say(
                    f"  baseline {rate:>6g}/s: {carried}/{total} carried, {failed} failed, "
                    f"{elapsed:.1f}s"
                )
                if failed or carried < total:
                    break
        finally:
            if uas.poll() is None:
                os.killpg(uas.pid, signal.SIGKILL)
                uas.wait()
        return results

    # -- the platform and its agents
    def start(self) -> None:
        self.var.mkdir(parents=True)
        shutil.copytree(REPO / "var" / "prompts", self.var / "prompts")
        exts = [str(30000 + n) for n in range(1, self.c.agents + 1)]
        directory = {e: ha1(e, "hotline", PASSWORD) for e in exts}
        (self.work / "extensions.yaml").write_text(yaml.safe_dump(directory))
        (self.work / "agents.csv").write_text(
            "SEQUENTIAL\n"
            + "".join(f"{e};[authentication username={e} password={PASSWORD}]\n" for e in exts)
        )
        self.stack.start()
        self.stack.wait_ready(timeout_s=120)
        self.say(f"  stack ready ({', '.join(f'{n}={p}' for n, p in self.pids().items())})")

        agent = self.render(
            "fullpath_agent.xml",
            talk_ms=str(self.c.talk_ms),
            ring_ms=str(self.c.ring_ms),
            voice_pcap=str(self.voice("agent", AGENT_VOICE_HZ, AGENT_PT, self.c.talk_ms)),
        )
        phones = self.phones = self.sipp(
            [
                f"127.0.0.1:{self.c.ports['SIP']}",
                "-sf",
                str(agent),
                "-i",
                "127.0.0.1",
                "-p",
                str(self.agent_port),
                "-mp",
                str(self.agent_port + 2),
                "-m",
                "1000000",
                "-l",
                str(self.c.agents * 2),
                "-nostdin",
                "-trace_logs",
                "-log_file",
                str(self.work / "agents.log"),
            ],
            "agents",
        )
        register = self.render("fullpath_register.xml", contact_port=str(self.agent_port))
        reg = self.sipp(
            [
                f"127.0.0.1:{self.c.ports['SIP']}",
                "-sf",
                str(register),
                "-inf",
                str(self.work / "agents.csv"),
                "-i",
                "127.0.0.1",
                "-p",
                str(self.reg_port),
                # two REGISTERs a phone, under the registrar's 20/s per source address
                "-r",
                "9",
                "-m",
                str(self.c.agents),
                "-nostdin",
                "-timeout",
                f"{self.c.agents // 5 + 30}s",
                "-trace_err",
            ],
            "register",
        )
        if reg.wait(self.c.agents // 5 + 60) != 0:
            raise RuntimeError(f"registering the agents failed; see {self.work / 'register.out'}")
        if phones.poll() is not None:
            raise RuntimeError(f"the agents' SIPp exited; see {self.work / 'agents.out'}")
        self.login_agents(exts)
        self.say(f"  {self.c.agents} agents registered and Ready")

    def login_agents(self, exts: list[str]) -> None:
        """Log every agent in at the ACD and make it Ready, as the CRM does for the desk."""
        tls = self.var / "tls"
        creds = grpc.ssl_channel_credentials(
            (tls / "ca.crt").read_bytes(),
            (tls / "crm.key").read_bytes(),
            (tls / "crm.crt").read_bytes(),
        )
        target = f"127.0.0.1:{self.c.ports['ACD_GRPC_PORT']}"
        options = [("grpc.ssl_target_name_override", "acd")]
        with grpc.secure_channel(target, creds, options=options) as channel:
            acd = acd_pb2_grpc.AcdStub(channel)
            for n, ext in enumerate(exts, start=1):
                agent_id = f"bench{n}"
                acd.Login(acd_pb2.LoginRequest(agent_id=agent_id, extension=ext), timeout=10)
                acd.SetState(
                    acd_pb2.SetStateRequest(agent_id=agent_id, state=events_pb2.AGENT_STATE_READY),
                    timeout=10,
                )
        deadline = time.monotonic() + 60
        while metric(self.metrics("acd"), "hotline_agents", state="ready") < len(exts):
            if time.monotonic() > deadline:
                raise RuntimeError("the agents did not all become Ready at the ACD")
            time.sleep(0.5)

    def wait_quiet(self, timeout_s: float) -> float | None:
        """Seconds until the gateway holds no call and no media port (None: not in time)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            text = self.metrics("gateway")
            if (
                metric(text, "hotline_active_calls") == 0
                and metric(text, "hotline_rtp_ports", state="in_use") == 0
            ):
                return time.monotonic() - start
            time.sleep(0.25)
        return None

    # -- one rate
    def step(self, index: int, rate: float) -> Step:
        c = self.c
        result = Step(rate)
        total = max(1, int(rate * c.step_s))
        prefix = f"9{index:02d}"
        step_dir = self.work / f"step-{index:02d}"
        step_dir.mkdir()
        caller = self.render(
            "fullpath_caller.xml",
            service="10000",
            prefix=prefix,
            dtmf_pcap=DTMF_PCAP,
            max_wait_ms=str(self.max_wait_ms),
            voice_pcap=str(
                self.voice("caller", CALLER_VOICE_HZ, CALLER_PT, c.talk_ms + CALLER_EXTRA_MS)
            ),
        )
        result.broker_records = self.broker_records()
        gw0 = self.metrics("gateway")
        pids = self.pids()
        ticks0 = {n: cpu_ticks(p) for n, p in pids.items()}
        sipp0 = self.sipp_cpu_s()
        stats = step_dir / "callers.csv"
        budget = c.step_s + self.max_wait_ms / 1000 + 60
        start = time.monotonic()
        proc = self.sipp(
            [
                f"127.0.0.1:{c.ports['SIP']}",
                "-sf",
                str(caller),
                "-i",
                "127.0.0.1",
                "-p",
                str(self.caller_port),
                "-mp",
                str(self.caller_port + 2),
                "-r",
                f"{rate:g}",
                "-m",
                str(total),
                "-l",
                str(int(rate * 40) + 10),
                "-nostdin",
                "-timeout",
                f"{int(budget)}s",
                "-trace_stat",
                "-stf",
                str(stats),
                "-fd",
                "1",
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-trace_logs",
                "-log_file",
                str(step_dir / "callers.log"),
            ],
            f"callers-{index:02d}",
        )
        # the -trace_rtt file is written in SIPp's working directory: move it per step
        plateau_at = start + c.step_s + PLATEAU_AFTER_S if c.plateau_s else None
        plateau_start: Sample | None = None
        while proc.poll() is None and time.monotonic() - start < budget + 30:
            if plateau_at is not None and time.monotonic() >= plateau_at:
                if plateau_start is None:
                    plateau_start = self.sample(proc)
                    plateau_at += c.plateau_s
                else:
                    result.plateau = Plateau.between(plateau_start, self.sample(proc))
                    plateau_at = None
            text = self.metrics("gateway")
            result.peak_calls = max(result.peak_calls, int(metric(text, "hotline_active_calls")))
            result.peak_ports = max(
                result.peak_ports, int(metric(text, "hotline_rtp_ports", state="in_use"))
            )
            result.rss_peak_mb = max(result.rss_peak_mb, self.rss_mb())
            time.sleep(1.0)  # a scrape costs the gateway CPU too: not more often than this
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        result.elapsed_s = time.monotonic() - start
        for rtt in self.work.glob("*_rtt.csv"):
            rtt.rename(step_dir / rtt.name)
        result.offered, result.carried, result.failed = (
            sipp_totals(stats)
            if stats.exists()
            else (
                0,
                0,
                total,
            )
        )
        placing = sipp_placing_s(stats, total) if stats.exists() else None
        result.placed_rate = total / max(placing, 1.0) if placing is not None else 0.0
        result.offered = total  # calls SIPp never got to start count as offered and failed
        result.failed = total - result.carried
        result.quiet_s = self.wait_quiet(60)
        result.rss_quiet_mb = self.rss_each_mb()
        ticks1 = {n: cpu_ticks(p) for n, p in pids.items()}
        sipp1 = self.sipp_cpu_s()
        gw1 = self.metrics("gateway")
        # every 503 to a new INVITE (admission limits, no media port, draining) is counted here
        result.shed = int(
            metric(gw1, "hotline_gateway_rejected_total", status="503")
            - metric(gw0, "hotline_gateway_rejected_total", status="503")
        )
        result.rtp_lost = metric(gw1, "hotline_rtp_packets_lost_total") - metric(
            gw0, "hotline_rtp_packets_lost_total"
        )
        result.rtp_expected = metric(gw1, "hotline_rtp_packets_expected_total") - metric(
            gw0, "hotline_rtp_packets_expected_total"
        )
        p99 = histogram_p99(buckets(gw0, LATENESS), buckets(gw1, LATENESS))
        result.tick_late_p99_ms = None if p99 is None else p99 * 1000
        result.skipped_frames = metric(gw1, SKIPPED) - metric(gw0, SKIPPED)
        calls = max(1, result.carried)
        result.cpu_ms_per_call = {
            n: (ticks1[n] - ticks0[n]) * 1000 / TICK / calls for n in pids if n in ticks1
        }
        result.sipp_cpu_ms_per_call = (sipp1 - sipp0) * 1000 / calls
        result.invite_200_ms = rtt_ms(step_dir)
        digits = read_log(step_dir / "callers.log", "DIGIT")
        rings = read_log(self.work / "agents.log", "RING")
        # the IVR acts on a key press at its first RTP packet (RFC 4733), sent as SIPp starts
        # playing the digit's pcap: from there to the agent phone's INVITE
        result.ring_ms = [(rings[n] - t) * 1000 for n, t in digits.items() if n in rings]
        return result

    def quantities(self, report: Report) -> None:
        """What the run left behind: CDRs (one per call that ended) and their recordings,
        counted once the CRM has handled every event on the broker (its consumer lag is 0)
        and the counts have stopped moving: a CRM still catching up is not a lost CDR."""
        db = self.var / "crm.sqlite"
        last, stable_since = (-1, -1), time.monotonic()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            conn = sqlite3.connect(db)
            try:
                rows = conn.execute(
                    "SELECT count(*), count(recording_id) FROM cdrs "
                    "WHERE ani LIKE '9%' AND ended_at IS NOT NULL"
                ).fetchone()
            finally:
                conn.close()
            now = (int(rows[0]), int(rows[1]))
            lag = metric(self.metrics("crm"), "hotline_kafka_consumer_lag")
            if now != last or lag > 0:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 5:
                break
            time.sleep(1)
        report.cdrs, report.cdrs_recorded = last
        report.events_published = metric(self.metrics("gateway"), "hotline_events_published_total")
        report.events_consumed = {
            s: metric(self.metrics(s), "hotline_events_consumed_total")
            for s in ("ivr", "acd", "crm")
        }

    def close(self) -> None:
        self.stop_sipp()
        self.stack.stop()


def run(config: Config, say: Callable[[str], None] = print) -> Report:
    """One full run: baseline, stack, agents, every rate; everything stopped at the end."""
    report = Report(config, load_before=os.getloadavg())
    with _work_dir(config.keep_dir) as work:
        bench = Bench(config, work, say)
        try:
            say("direct SIPp baseline (UAC -> UAS, no Hotline):")
            report.baseline = bench.baseline()
            say("full path: starting the stack")
            bench.start()
            time.sleep(3)
            report.rss_idle_mb = bench.rss_mb()
            idle_each = bench.rss_each_mb()
            report.calls_possible_idle = metric(
                bench.metrics("gateway"), "hotline_gateway_calls_possible"
            )
            shedding = 0
            for index, rate in enumerate(config.rates):
                step = bench.step(index, rate)
                report.steps.append(step)
                report.rss_peak_mb = max(report.rss_peak_mb, step.rss_peak_mb)
                say(format_step(step))
                shedding += step.shed > 0
                if config.stop_at_failure and (
                    step.failed > step.shed or shedding >= config.shed_steps
                ):
                    break
            if any(s.failed for s in report.steps) and config.rates:
                say("  recovery: the first rate again")
                report.recovery = bench.step(len(report.steps), config.rates[0])
                say(format_step(report.recovery))
            time.sleep(config.settle_s)
            report.rss_after_mb = bench.rss_mb()
            after_each = bench.rss_each_mb()
            report.rss_by_process = {n: (idle_each[n], after_each.get(n, 0.0)) for n in idle_each}
            bench.quantities(report)
        finally:
            bench.close()
            report.load_after = os.getloadavg()
            if config.keep_dir is not None:
                say(f"logs kept in {work}")
    return report


@contextlib.contextmanager
def _work_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
        yield Path(tmp)


def _ms(values: list[float]) -> str:
    if not values:
        return "   n/a /   n/a"
    return f"{percentile(values, 50):6.1f} / {percentile(values, 99):6.1f}"


def format_step(s: Step) -> str:
    loss = f"{s.rtp_lost / s.rtp_expected:.2%}" if s.rtp_expected else "n/a"
    late = "n/a" if s.tick_late_p99_ms is None else f"<= {s.tick_late_p99_ms:g} ms"
    cpu = " ".join(f"{n}={v:.1f}" for n, v in s.cpu_ms_per_call.items())
    quiet = f"{s.quiet_s:.1f}s" if s.quiet_s is not None else "NOT QUIET"
    rss = " ".join(f"{n}={v:.0f}" for n, v in s.rss_quiet_mb.items())
    return (
        f"  {s.rate:>6g}/s offered {s.offered:>5} (placed at {s.placed_rate:.1f}/s) carried "
        f"{s.carried:>5} failed {s.failed:>5} "
        f"shed {s.shed:>5} | INVITE->200 p50/p99 {_ms(s.invite_200_ms)} ms "
        f"({len(s.invite_200_ms)}) | digit->agent ring p50/p99 {_ms(s.ring_ms)} ms "
        f"({len(s.ring_ms)}) | peak calls {s.peak_calls} ports {s.peak_ports} | RTP loss {loss} "
        f"| tick lateness p99 {late}, skipped frames {s.skipped_frames:.0f} "
        f"| quiet after {quiet}\n           CPU ms/call: {cpu} "
        f"(the broker held {s.broker_records} records at the start; "
        f"the load generator SIPp {s.sipp_cpu_ms_per_call:.1f})"
        f"\n           RSS once quiet, MB: {rss}"
        + (f"\n           {s.plateau}" if s.plateau is not None else "")
    )


def print_report(r: Report, say: Callable[[str], None] = print) -> None:
    c = r.config
    say("")
    say(
        f"full path: {c.agents} agents, talk {c.talk_ms} ms, ring {c.ring_ms} ms, wrap-up "
        f"{c.wrap_up_s:g} s, {c.step_s:g} s per rate, SIPp at nice {c.sipp_nice}, the "
        f"gateway's loop at {_loop_scheduling(c)}; load average "
        f"before "
        f"{r.load_before[0]:.2f} after {r.load_after[0]:.2f} on {os.cpu_count()} CPUs"
    )
    held, base = r.held_rate, r.baseline_rate
    ratio = f"{held / base:.3f}x" if base else "n/a"
    say(f"  highest rate held with 0 failed calls : {held:g}/s")
    say(f"  direct SIPp baseline (same run)       : {base:g}/s (highest step tried held)")
    say(f"  ratio full path / baseline            : {ratio}")
    peak = max((s.peak_calls for s in r.steps), default=0)
    say(f"  concurrent calls held (media+recording): {peak} at the gateway")
    say(
        "  gateway capacity figure at idle (hotline_gateway_calls_possible): "
        f"{r.calls_possible_idle:.0f}"
    )
    say(
        f"  stack RSS: idle {r.rss_idle_mb:.0f} MB, peak {r.rss_peak_mb:.0f} MB, after "
        f"{r.rss_after_mb:.0f} MB ({r.rss_after_mb / r.rss_idle_mb - 1:+.0%} of idle)"
        if r.rss_idle_mb
        else "  stack RSS: not measured"
    )
    if r.rss_by_process:
        say(
            "  RSS idle -> after, MB: "
            + ", ".join(f"{n} {a:.0f}->{b:.0f}" for n, (a, b) in r.rss_by_process.items())
        )
    carried = sum(s.carried for s in r.steps) + (r.recovery.carried if r.recovery else 0)
    say(
        f"  CDRs ended: {r.cdrs} for {carried} carried calls; with a recording: "
        f"{r.cdrs_recorded}; gateway events published {r.events_published:.0f}, consumed "
        + ", ".join(f"{s} {v:.0f}" for s, v in r.events_consumed.items())
    )
    say("  offered vs carried vs shed (503) vs failed otherwise, per rate:")
    for s in r.steps:
        other = s.failed - s.shed
        say(f"    {s.rate:>6g}/s  {s.offered:>6} {s.carried:>6} {s.shed:>6} {other:>6}")
    if r.recovery is not None:
        rec = r.recovery
        verdict = "recovered" if rec.failed == 0 and rec.quiet_s is not None else "NOT recovered"
        say(
            f"  after overload, {rec.rate:g}/s again: {rec.carried}/{rec.offered} carried "
            f"({verdict}; no call or port left {'held' if rec.quiet_s is None else 'over'})"
        )


def _loop_scheduling(c: Config) -> str:
    priority = int(c.env.get("HOTLINE_GATEWAY_REALTIME_PRIORITY", "0"))
    return f"SCHED_RR {priority}" if priority else "normal priority"


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def main() -> None:
    d = Config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=_floats, default=d.rates, help="calls/s, comma-separated")
    parser.add_argument("--step-s", type=float, default=d.step_s)
    parser.add_argument("--agents", type=int, default=d.agents)
    parser.add_argument("--talk-ms", type=int, default=d.talk_ms)
    parser.add_argument("--baseline-rates", type=_floats, default=d.baseline_rates)
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    parser.add_argument("--no-stop", action="store_true", help="try every rate even after failures")
    parser.add_argument(
        "--gateway-cps",
        type=float,
        default=0.0,
        help="HOTLINE_GATEWAY_MAX_CPS for the run (0: the gateway's default, from the machine)",
    )
    parser.add_argument(
        "--gateway-priority",
        type=int,
        default=0,
        help="HOTLINE_GATEWAY_REALTIME_PRIORITY for the run: its event loop at SCHED_RR with "
        "this priority (needs root; 0: normal scheduling, as every other process)",
    )
    parser.add_argument(
        "--plateau-s",
        type=float,
        default=d.plateau_s,
        help="measure the media path on this many seconds of each step's plateau, once every "
        "call is placed and talking (make --talk-ms long enough)",
    )
    parser.add_argument(
        "--sipp-nice",
        type=int,
        default=d.sipp_nice,
        help="the load generator's niceness (0: the same priority as the stack under test)",
    )
    args = parser.parse_args()
    config = Config(
        rates=args.rates,
        step_s=args.step_s,
        agents=args.agents,
        talk_ms=args.talk_ms,
        baseline_rates=args.baseline_rates,
        keep_dir=args.keep,
        stop_at_failure=not args.no_stop,
        env={
            "HOTLINE_GATEWAY_MAX_CPS": f"{args.gateway_cps:g}",
            "HOTLINE_GATEWAY_REALTIME_PRIORITY": str(args.gateway_priority),
        },
        sipp_nice=args.sipp_nice,
        plateau_s=args.plateau_s,
    )
    report = run(config, lambda line: print(line, flush=True))
    print_report(report)
    if not report.steps or report.held_rate == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
