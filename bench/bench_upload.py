"""A spooled recording's trip to the recorder over gRPC: CPU of both sides per recording, by the
size of the upload's `frames` chunks.

Run: .venv/bin/python bench/bench_upload.py [--recordings 100] [--seconds 2] [--chunks-ms 100,1000]
     [--rounds 2]

The gateway's side is this process: the real `Spool` (recordings written by the media tap and
sealed, outside the measurement) and the real `Uploader` (three uploads at a time) over a
mutual-TLS channel with the gateway's certificate. The recorder's side is a child process
running the real gRPC server (`common.rpc.server`: guard and tracing interceptor),
`RecorderService`, `Ingest`, the local store and a migrated SQLite catalog, announcing into an
in-process list (no broker). Both on uvloop, as the services run. For each chunk size it
prints the CPU per recording of the uploader (this process) and of the recorder (the child,
every thread, from /proc), best of interleaved rounds, and their ratio to the first size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from common import certs, tracing
from common.rpc import Tls, server
from gateway.spool import Spool, SpoolEntry
from gateway.uploader import GrpcRecorderLink, Uploader
from hotline.v1 import recorder_pb2_grpc
from recorder.announcer import Announcer
from recorder.catalog import Catalog, migrate, open_engine
from recorder.ingest import Ingest
from recorder.notifier import RecorderNotifier
from recorder.servicer import RecorderService
from recorder.storage import LocalRecordingStore

RATE = 8000
FRAME = 160  # samples of one 20 ms media frame


def tls(root: Path, name: str) -> Tls:
    return Tls.load(root / "ca.crt", root / f"{name}.crt", root / f"{name}.key")


# ---- the recorder: a child process --------------------------------------------------------
async def serve(root: Path) -> None:
    """The recorder's ingest path behind its real gRPC server; prints its port, then serves
    until stdin closes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_recorder import RecordingList  # the same stand-in publisher as bench_recorder

    tracing.setup("bench-recorder")
    engine = open_engine(f"sqlite+aiosqlite:///{root / 'recorder.db'}")
    await migrate(engine)
    catalog = Catalog(engine)
    announcer = Announcer(catalog, RecorderNotifier(RecordingList(0.002)))
    announcer.start()
    ingest = Ingest(LocalRecordingStore(root / "recordings"), catalog, announcer)
    srv, port = server("127.0.0.1", 0, tls(root / "certs", "recorder"), RecorderService.CALLERS)
    recorder_pb2_grpc.add_RecorderServicer_to_server(RecorderService(ingest), srv)
    await srv.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await srv.stop(1)
    await announcer.stop()
    await catalog.close()
    await engine.dispose()


def child_cpu_s(pid: int) -> float:
    """User + system CPU of a process and all its threads so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the gateway: spool, then upload ------------------------------------------------------
async def spooled(root: Path, n: int, seconds: float) -> None:
    """`n` sealed recordings of `seconds` each in the spool at `root`, as the tap writes them."""
    spool = Spool(root)
    sealed: list[SpoolEntry] = []
    rng = np.random.default_rng(5)
    frames = rng.integers(-8000, 8000, size=(50, 2, FRAME), dtype=np.int16)
    per_call = round(seconds * RATE / FRAME)
    for i in range(n):
        writer = spool.open(f"call-{i}", "agent7", "sales", sealed.append)
        for j in range(per_call):
            writer.tap(frames[j % 50, 0], frames[j % 50, 1])
        await writer.finish()
    while len(sealed) < n:
        await asyncio.sleep(0.01)
    await spool.close()


async def upload_all(root: Path, port: int, client: Tls, chunk_samples: int) -> int:
    """Upload everything in the spool at `root` (the uploader finds it at start); returns how
    many recordings went."""
    spool = Spool(root)
    uploader = Uploader(
        spool,
        lambda: GrpcRecorderLink.connect(f"127.0.0.1:{port}", client),
        chunk_samples=chunk_samples,
    )
    await uploader.start()
    count = len(uploader.waiting)
    assert await uploader.drain(120.0), "every recording uploaded"
    assert uploader.failing is None, uploader.failing
    await uploader.stop(1.0)
    await spool.close()
    return count


async def measure(args: argparse.Namespace) -> None:
    tracing.setup("bench-gateway")
    sizes = [int(ms) for ms in args.chunks_ms.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        certs.ensure(root / "certs", ("recorder", "gateway"))
        client = tls(root / "certs", "gateway")
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            # warm up: channel, TLS, statement caches
            await spooled(root / "warm", 3, args.seconds)
            await upload_all(root / "warm", port, client, sizes[0] * RATE // 1000)
            best: dict[int, tuple[float, float]] = {}
            for r in range(args.rounds):  # interleaved rounds, best of each
                for ms in sizes:
                    spool_root = root / f"spool-{r}-{ms}"
                    await spooled(spool_root, args.recordings, args.seconds)
                    await asyncio.sleep(0.2)  # the spool's disk thread and the child settle
                    ours, theirs = time.process_time(), child_cpu_s(child.pid)
                    n = await upload_all(spool_root, port, client, ms * RATE // 1000)
                    ours = (time.process_time() - ours) / n
                    theirs = (child_cpu_s(child.pid) - theirs) / n
                    old = best.get(ms)
                    if old is None or ours + theirs < sum(old):
                        best[ms] = (ours, theirs)
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(30)
    print(
        f"upload over mTLS gRPC: {args.recordings} spooled recordings of {args.seconds:g} s, "
        f"3 at a time, best of {args.rounds}; CPU ms per recording"
    )
    first = sizes[0]
    for ms in sizes:
        gw, rec = best[ms]
        print(
            f"  {ms:5d} ms chunks: gateway uploader {gw * 1e3:5.2f}  recorder {rec * 1e3:5.2f}  "
            f"sum {(gw + rec) * 1e3:5.2f}   ratio to {first} ms: gateway "
            f"{gw / best[first][0]:.2f}, recorder {rec / best[first][1]:.2f}, "
            f"sum {(gw + rec) / sum(best[first]):.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each recording")
    ap.add_argument("--chunks-ms", default="100,1000", help="chunk sizes to compare, first = base")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    run: Any = measure(args) if args.serve is None else serve(args.serve)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run)


if __name__ == "__main__":
    main()
