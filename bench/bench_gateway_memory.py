"""Gateway memory benchmark: what each finished call keeps alive, and for how long.

Run: .venv/bin/python bench/bench_gateway_memory.py [--rate 20] [--seconds 10] [--talk-ms 2000]
     [--warmup-s 10] [--trim] [--mode rss|trace] [--cpu-only]

The gateway's SIP channel and switch run in this process as the gateway wires them (real UDP
transport and transaction layer, registrar, RTP media on the 20 ms clock, bridging, the
recording spool), on loopback, with the IVR and the ACD replaced by a few lines that answer
each offered call and connect it to the next free extension. SIPp plays the callers (trunk
INVITEs with PCMA and audio) and one SIPp answers for every extension (the agents' phones,
bound at the registrar directly); the agent hangs up after ``talk_ms``, so every call ends by
BYE: the phone's BYE to us, ours to the caller.

It prints, at idle, at the peak of concurrent calls (the end of the load), ``after_s`` after
the last call ended (its calls' INVITE transactions are still in RFC 6026's Accepted state,
Timer L = 64*T1 = 32 s) and once those transactions are gone: RSS, live objects of the types
a call is made of (``gc.get_objects``), and how many objects and bytes each ended call still
holds (live objects and tracemalloc-traced bytes above idle, divided by the ended calls whose
INVITE transactions still linger), with where the RSS sits (brk heap, anonymous maps and
CPython's arenas among them, files). ``--warmup-s`` runs a first round of calls before the
idle look (steady state: per-seat metrics and other lazily made state exist by then);
``--trim`` calls glibc's ``malloc_trim(0)`` at each quiet look. The run is done twice,
each in a fresh process: RSS without tracemalloc (its traces cost memory), then the same
with tracemalloc, whose largest differences from idle by source line say what holds the
bytes. Loopback only, bounded in calls and time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp") or "sipp"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: below the ephemeral range, in block 15200-15299 of the tests' port plan (tests/ports.py,
#: whose unit test checks these too): apart from bench_fullpath's, `make run`'s (the gateway's
#: default RTP range), every test stack's and the ports the tests' SIP peers bind (16xxx, 26xxx)
SIP_PORT = 15260
RTP_RANGE = (32100, 32767)
SIPP_BASE = 17600  # the agents' SIPp at base (media base + 2), the callers' at base + 20

#: the types a call is made of, counted at each point (by class name)
WATCHED = (
    "SipLeg",
    "Dialog",
    "FinishedDialog",
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "ServerTransaction",
    "ClientTransaction",
    "InviteOkRetransmitter",
    "SipRequest",
    "SipResponse",
    "Headers",
    "Call",
    "SipMedia",
    "RtpSession",
    "MediaNegotiation",
    "Bridge",
    "Room",
    "SpoolWriter",
    "Task",
)


@dataclass
class Census:
    """One look at the process."""

    label: str
    rss_mb: float
    objects: int
    by_type: dict[str, int]
    lingering: int = 0  # ended calls whose INVITE server transaction is still in the table
    traced: int = 0  # tracemalloc's traced bytes (0 without it)
    snapshot: Any = None
    arenas_mb: float = 0.0  # CPython's small-object arenas (pymalloc), allocated
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    kinds: dict[str, float] = field(default_factory=dict)
    blocks: int = 0  # sys.getallocatedblocks(): every live pymalloc block, tracked by gc or not


@dataclass
class Result:
    censuses: list[Census] = field(default_factory=list)
    rss_peak_mb: float = 0.0
    calls: int = 0
    bridged: int = 0
    #: process CPU seconds (every thread) from the first call until the last one ended, the
    #: peak census aside, and of that the spool's disk thread
    cpu_s: float = 0.0
    spool_cpu_s: float = 0.0


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_KB / 1024


def cpu_s() -> float:
    """CPU seconds of this process so far, user and system, every thread."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu_s(prefix: str) -> float:
    """CPU seconds so far of this process's threads whose name starts with `prefix`."""
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith(prefix) and t.native_id is not None:
            try:
                fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
            except OSError:
                continue
            utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
            total += (int(utime) + int(stime)) / CLOCK_TICKS
    return total


def holds_calls() -> bool:
    """Whether any leg or call object is still alive (garbage in cycles aside)."""
    gc.collect()
    return any(type(o).__name__ in ("SipLeg", "Call") for o in gc.get_objects())


def census(label: str, layer: Any, traced: bool) -> Census:
    gc.collect()
    objects = gc.get_objects()
    counts = collections.Counter(type(o).__name__ for o in objects)
    by_type = {name: counts.get(name, 0) for name in WATCHED}
    total = len(objects)
    del objects
    from gateway.sip.transaction import ACCEPTED, InviteServerTransaction

    lingering = sum(
        1
        for tx in layer._table._server.values()
        if isinstance(tx, InviteServerTransaction) and tx.state == ACCEPTED
    )
    snap = tracemalloc.take_snapshot() if traced else None
    size = tracemalloc.get_traced_memory()[0] if traced else 0
    return Census(
        label,
        rss_mb(),
        total,
        by_type,
        lingering,
        size,
        snap,
        arenas_mb(),
        counts,
        rss_by_kind(),
        sys.getallocatedblocks(),
    )


def rss_by_kind() -> dict[str, float]:
    """RSS by kind of mapping (/proc/self/smaps), MB: the brk heap (glibc's main arena),
    anonymous maps (pymalloc arenas, other malloc arenas, large blocks, thread stacks), files."""
    kinds = {"heap": 0.0, "anon": 0.0, "file": 0.0}
    kind = "anon"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=6)
        if len(first) >= 5 and "-" in first[0] and not line.endswith(":"):
            name = first[5] if len(first) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
        elif line.startswith("Rss:"):
            kinds[kind] += int(line.split()[1]) / 1024
    return kinds


def arenas_mb() -> float:
    """What CPython's small-object allocator holds in arenas (sys._debugmallocstats), MB:
    memory its objects freed stays in an arena until the whole arena is free."""
    import re

    fd = os.dup(2)
    try:  # _debugmallocstats writes to the C stderr: catch it through a temporary file
        with tempfile.TemporaryFile("w+") as tmp:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
            os.dup2(fd, 2)
            tmp.seek(0)
            text = tmp.read()
    finally:
        os.dup2(fd, 2)
        os.close(fd)
    size = re.search(r"(\d+) arenas \* (\d+) bytes/arena\s*=\s*([\d,]+)", text)
    return int(size.group(3).replace(",", "")) / 2**20 if size else 0.0


def trim_now() -> None:
    """glibc's malloc_trim(0): free memory back to the system (where libc has it)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if hasattr(libc, "malloc_trim"):
        gc.collect()
        libc.malloc_trim(0)


def why_alive() -> None:
    """Debugging aid (BENCH_WHY=1): the live tasks, and what refers to a surviving leg."""
    tasks = collections.Counter(
        t.get_coro().__qualname__
        for t in asyncio.all_tasks()  # type: ignore[union-attr]
    )
    print("  live tasks:", dict(tasks.most_common(8)))
    legs = [o for o in gc.get_objects() if type(o).__name__ == "SipLeg"]
    if not legs:
        return
    obj: Any = legs[0]
    seen = {id(legs)}
    for depth in range(8):
        refs = [r for r in gc.get_referrers(obj) if id(r) not in seen and r is not legs]
        print(f"  {'  ' * depth}{type(obj).__name__} <- {[type(r).__name__ for r in refs][:6]}")
        if not refs:
            break
        seen.add(id(obj))
        obj = refs[0]


class Driver:
    """The IVR and the ACD in a few lines: answer each call, connect it to a free extension."""

    def __init__(self, extensions: list[str]) -> None:
        self.free = collections.deque(extensions)
        self.switch: Any = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.busy: dict[str, str] = {}
        self.calls = 0
        self.bridged_calls = 0

    # CallEvents
    def offered(self, call: Any) -> None:
        self.calls += 1
        task = asyncio.get_running_loop().create_task(self._serve(call.call_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def answered(self, call: Any) -> None:
        pass

    def bridged(self, call: Any, leg_id: str, endpoint: str) -> None:
        self.bridged_calls += 1

    def ended(self, call: Any, reason: Any, detail: str, duration_ms: int, talk_ms: int) -> None:
        ext = self.busy.pop(call.call_id, None)
        if ext is not None:
            self.free.append(ext)

    def step(self, call: Any, step: Any) -> None:
        pass

    async def _serve(self, call_id: str) -> None:
        from gateway.core.calls import CallGone, CommandError

        try:
            self.switch.answer(call_id)
            await asyncio.sleep(0.3)  # the IVR's greeting, shortened
            if not self.free:
                self.switch.hangup(call_id, "no free agent")
                return
            ext = self.free.popleft()
            self.busy[call_id] = ext
            await self.switch.connect(call_id, ext, 10.0, f"agent-{ext}", "sales")
        except (CallGone, CommandError):
            pass


class Harness:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.a, self.work = args, work
        self.procs: list[subprocess.Popen[bytes]] = []

    def sipp(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [SIPP, *argv],
            cwd=self.work,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def render(self, scenario: str, **keys: str) -> Path:
        text = (SCENARIOS / scenario).read_text()
        for k, v in keys.items():
            text = text.replace(f"[{k}]", v)
        out = self.work / scenario
        out.write_text(text)
        return out

    def stop_sipp(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    async def run(self) -> Result:
        from gateway.channels.sip import SipChannel, TrunkPolicy
        from gateway.channels.sip.admission import Admission, AdmissionLimits
        from gateway.core.prompts import PromptLibrary
        from gateway.core.switch import Switch
        from gateway.media.clock import FrameClock
        from gateway.media.endpoint import PortAllocator
        from gateway.sip.registrar import Binding, Registrar
        from gateway.sip.transaction import Timers
        from gateway.sip.transaction_asyncio import TransactionLayer
        from gateway.sip.transport import UdpTransport
        from gateway.sip.uri import NameAddr
        from gateway.spool import Spool, SpoolEntry

        a = self.a
        traced = a.mode == "trace"
        result = Result()
        loop = asyncio.get_running_loop()
        agent_port, caller_port = SIPP_BASE, SIPP_BASE + 20
        extensions = [str(30000 + n) for n in range(1, a.agents + 1)]
        driver = Driver(extensions)
        clock = FrameClock()
        clock.start()
        spool = Spool(self.work / "spool")
        (self.work / "spool").mkdir()

        class Recorder:
            """The spool as the gateway keeps it; a sealed recording is deleted at once (the
            uploader's part, which needs the recorder service)."""

            def start(
                self, call_id: str, agent_id: str, queue: str, trace: dict[str, str] | None = None
            ) -> Any:
                def sealed(entry: SpoolEntry) -> None:
                    spool.submit(spool.delete, entry)

                return spool.open(call_id, agent_id, queue, on_sealed=sealed, trace=trace)

        registrar = Registrar({}, "hotline")
        sip = SipChannel(
            TransactionLayer(
                Timers(),
                lambda req, tx: sip.on_request(req, tx),
                lambda resp, addr: sip.on_stray_response(resp, addr),
            ),
            registrar,
            ("127.0.0.1", SIP_PORT),
            media_host="127.0.0.1",
            allocator=PortAllocator(*RTP_RANGE),
            trunk=TrunkPolicy.of("sip-trunk", ("10000",), ("127.0.0.1/32",), False),
            site="bench",
            # the bench measures memory, not the admission policy: limits far above the load
            admission=Admission(AdmissionLimits(*(100000.0, 100000, 100000) * 2)),
        )
        switch = Switch(
            site="bench",
            events=driver,
            clock=clock,
            prompts=PromptLibrary(REPO / "var" / "prompts"),
            endpoints=sip,
            trunks={},
            recorder=Recorder(),  # type: ignore[arg-type]
        )
        driver.switch = switch
        udp = await UdpTransport.listen(
            "127.0.0.1",
            SIP_PORT,
            sip.layer.receive,
            lambda data, addr, exc: sip.on_malformed(data, addr, exc, udp),
        )
        for ext in extensions:
            registrar.bindings[ext] = Binding(
                ext,
                NameAddr.parse(f"<sip:{ext}@127.0.0.1:{agent_port}>"),
                ("127.0.0.1", agent_port),
                udp,
                time.monotonic() + 3600,
            )
        sip.start(switch, udp)
        try:
            agent = self.render("fullpath_agent.xml", talk_ms=str(a.talk_ms), ring_ms="100")
            self.sipp(
                [
                    f"127.0.0.1:{SIP_PORT}",
                    "-sf",
                    str(agent),
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(agent_port),
                    "-mp",
                    str(agent_port + 2),
                    "-m",
                    "1000000",
                    "-l",
                    str(a.agents * 2),
                    "-nostdin",
                ],
                "agents",
            )
            await asyncio.sleep(2.0)
            caller = self.render(
                "fullpath_caller.xml",
                service="10000",
                prefix="9",
                dtmf_pcap="/usr/share/sip-tester/dtmf_2833_1.pcap",
                max_wait_ms=str(a.talk_ms + 15000),
            )

            def start_callers(seconds: float) -> subprocess.Popen[bytes]:
                return self.sipp(
                    [
                        f"127.0.0.1:{SIP_PORT}",
                        "-sf",
                        str(caller),
                        "-i",
                        "127.0.0.1",
                        "-p",
                        str(caller_port),
                        "-mp",
                        str(caller_port + 2),
                        "-r",
                        f"{a.rate:g}",
                        "-m",
                        str(int(a.rate * seconds)),
                        "-l",
                        str(int(a.rate * 40) + 10),
                        "-nostdin",
                        "-timeout",
                        f"{int(seconds + a.talk_ms / 1000 + 60)}s",
                    ],
                    "callers",
                )

            async def quiesce() -> None:
                """Until the last INVITE transactions left Accepted (Timer L) and the
                finished dialogs are forgotten (64*T1); legs and calls went at hang-up,
                unless something else holds them: then the process holds no call at all."""
                deadline = loop.time() + 64 * Timers().t1 + 60
                while loop.time() < deadline and (
                    sip.layer.server_count
                    or sip.layer.client_count
                    or sip._dialogs
                    or sip._finished
                    or holds_calls()
                ):
                    await asyncio.sleep(1.0)
                await asyncio.sleep(1.0)

            if a.warmup_s:  # a first load: per-seat metrics and lazy state exist before idle
                warm = start_callers(a.warmup_s)
                while warm.poll() is None or switch.registry.live():
                    await asyncio.sleep(0.25)
                await quiesce()
                driver.calls = driver.bridged_calls = 0
            result.censuses.append(census("idle", sip.layer, traced))
            if a.trim:  # the process trims when quiet: before the load as after it
                trim_now()
                result.censuses.append(census("idle trim", sip.layer, traced))
            callers = start_callers(a.seconds)
            start = loop.time()
            cpu_start, spool_start, census_cpu = cpu_s(), thread_cpu_s("recording-spool"), 0.0
            peak_taken = False
            while True:
                result.rss_peak_mb = max(result.rss_peak_mb, rss_mb())
                elapsed = loop.time() - start
                if not peak_taken and elapsed >= a.seconds:
                    peak_taken = True
                    before = cpu_s()
                    peak = census("peak", sip.layer, traced)
                    census_cpu = cpu_s() - before
                    result.censuses.append(peak)
                    result.rss_peak_mb = max(result.rss_peak_mb, peak.rss_mb)
                done = callers.poll() is not None
                if peak_taken and done and not switch.registry.live():
                    break
                if elapsed > a.seconds + a.talk_ms / 1000 + 90:
                    print("  (gave up waiting for the calls to end)")
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(1.0)  # the last seals and deletes on the disk thread
            result.cpu_s = cpu_s() - cpu_start - census_cpu
            result.spool_cpu_s = thread_cpu_s("recording-spool") - spool_start
            result.calls, result.bridged = driver.calls, driver.bridged_calls
            if a.cpu_only:
                return result
            await asyncio.sleep(max(0.0, a.after_s - 1.0))
            result.censuses.append(census(f"+{a.after_s:g}s", sip.layer, traced))
            if a.trim:
                trim_now()
                result.censuses.append(census(f"+{a.after_s:g}s trim", sip.layer, traced))
            await quiesce()
            if a.trim:
                trim_now()
            result.censuses.append(census("forgotten", sip.layer, traced))
            if os.environ.get("BENCH_WHY"):
                why_alive()
            result.calls, result.bridged = driver.calls, driver.bridged_calls
        finally:
            self.stop_sipp()
            sip.stop()
            await switch.stop()
            udp.close()
            clock.stop()
            await spool.close()
        return result


def report_cpu(a: argparse.Namespace, r: Result) -> None:
    per_call = 1000 / max(r.calls, 1)
    print(
        f"  CPU per call (every thread, from the first call until the last one ended): "
        f"{r.cpu_s * per_call:.2f} ms, of which the spool's disk thread "
        f"{r.spool_cpu_s * per_call:.2f} ms ({r.calls} calls, {r.bridged} bridged)"
    )


def report(a: argparse.Namespace, r: Result) -> None:
    if a.cpu_only:
        report_cpu(a, r)
        return
    idle, *_ = r.censuses
    byname = {c.label: c for c in r.censuses}
    after = byname[f"+{a.after_s:g}s"]
    traced = a.mode == "trace"
    print(
        f"{'tracemalloc on' if traced else 'RSS run'}: {r.calls} calls offered, {r.bridged} "
        f"bridged, {a.rate:g}/s for {a.seconds:g}s, talk {a.talk_ms} ms"
        + (f", after a warm-up round of {a.warmup_s:g}s" if a.warmup_s else "")
    )
    head = f"  {'':24s}" + "".join(f"{c.label:>11s}" for c in r.censuses)
    print(head)
    report_cpu(a, r)
    print(f"  {'RSS MB':24s}" + "".join(f"{c.rss_mb:11.1f}" for c in r.censuses))
    at_peak = [c.label for c in r.censuses].index("peak")
    print(f"  {'  (peak sampled)':24s}" + " " * 11 * at_peak + f"{r.rss_peak_mb:11.1f}")
    for kind in ("heap", "anon", "file"):
        print(
            f"  {'  RSS ' + kind + ' MB':24s}"
            + "".join(f"{c.kinds.get(kind, 0.0):11.1f}" for c in r.censuses)
        )
    print(f"  {'pymalloc arenas MB':24s}" + "".join(f"{c.arenas_mb:11.1f}" for c in r.censuses))
    print(f"  {'allocated blocks':24s}" + "".join(f"{c.blocks:11d}" for c in r.censuses))
    print(f"  {'live objects':24s}" + "".join(f"{c.objects:11d}" for c in r.censuses))
    if traced:
        print(f"  {'traced KB':24s}" + "".join(f"{c.traced / 1024:11.0f}" for c in r.censuses))
    print(f"  {'INVITE tx in Accepted':24s}" + "".join(f"{c.lingering:11d}" for c in r.censuses))
    for name in WATCHED:
        if any(c.by_type[name] for c in r.censuses):
            print(f"  {name:24s}" + "".join(f"{c.by_type[name]:11d}" for c in r.censuses))
    growth = (after.rss_mb - idle.rss_mb) / idle.rss_mb * 100
    print(f"  RSS {after.label} vs idle: {growth:+.1f}%")
    final = byname["forgotten"]
    print(f"  RSS forgotten vs idle: {(final.rss_mb - idle.rss_mb) / idle.rss_mb * 100:+.1f}%")
    if a.trim:  # each trimmed look against the trimmed idle
        base, trimmed = byname["idle trim"], byname[f"+{a.after_s:g}s trim"]
        for c in (trimmed, final):
            grew = (c.rss_mb - base.rss_mb) / base.rss_mb * 100
            print(f"  RSS {c.label} vs idle trim: {grew:+.1f}%" + (" (trimmed)" * (c is final)))
    # what stays once every call is forgotten: each survivor can pin a whole pymalloc arena
    grown = (final.counts - idle.counts).most_common(8)
    print("  more objects forgotten vs idle: " + ", ".join(f"{n} {k}" for k, n in grown))
    # the ended calls something still holds: their INVITE transactions linger, or their
    # legs and calls are still alive
    n = max(after.lingering, after.by_type["Call"], after.by_type["SipLeg"] // 2)
    if n:
        print(
            f"  per ended call still held at {after.label} ({n}): "
            f"{(after.objects - final.objects) / n:.0f} objects"
            + (f", {(after.traced - final.traced) / n / 1024:.1f} KB traced" if traced else "")
        )
    if traced and after.snapshot is not None and final.snapshot is not None:
        print(f"  largest differences {after.label} vs forgotten (by line):")
        for stat in after.snapshot.compare_to(final.snapshot, "lineno")[:15]:
            frame = stat.traceback[0]
            name = (
                os.path.relpath(frame.filename, REPO)
                if REPO.as_posix() in frame.filename
                else (frame.filename.rsplit("site-packages/", 1)[-1])
            )
            print(
                f"    {stat.size_diff / 1024:9.1f} KB {stat.count_diff:7d} blocks"
                f"  {name}:{frame.lineno}"
            )


def run_child(a: argparse.Namespace) -> None:
    import uvloop

    if a.mode == "trace":
        tracemalloc.start(1)
    work = Path(tempfile.mkdtemp(prefix="bench-gw-mem-"))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(Harness(a, work).run())
        report(a, result)
    finally:
        if a.keep:
            print(f"  logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=20.0, help="calls per second")
    p.add_argument("--seconds", type=float, default=10.0, help="how long calls arrive")
    p.add_argument("--talk-ms", type=int, default=2000, help="the agent hangs up after this")
    p.add_argument("--agents", type=int, default=200, help="extensions answering")
    p.add_argument("--after-s", type=float, default=5.0, help="the look after the last call")
    p.add_argument("--mode", choices=("both", "rss", "trace"), default="both")
    p.add_argument("--keep", action="store_true", help="keep the SIPp logs")
    p.add_argument(
        "--cpu-only",
        action="store_true",
        help="only the CPU per call (one RSS run, no looks after the load)",
    )
    p.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="a first round of calls (this long) before the idle look: steady state",
    )
    p.add_argument(
        "--trim", action="store_true", help="malloc_trim(0) when quiet: at idle, after the load"
    )
    a = p.parse_args()
    if a.cpu_only:
        a.mode = "rss"
    if a.mode != "both":
        os.environ.setdefault("HOTLINE_LOG_LEVEL", "WARNING")
        import logging

        logging.basicConfig(level=logging.WARNING)
        run_child(a)
        return
    for mode in ("rss", "trace"):
        argv = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        subprocess.run(argv, check=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})


if __name__ == "__main__":
    main()
