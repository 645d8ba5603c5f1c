"""Recording hot paths: the media tap of the spool, and reading a spool back for upload.

Run: .venv/bin/python bench/bench_recording.py [--seconds 1.0]

1. The tap runs on the 20 ms media clock for every bridged call: frame pairs per second of
   `SpoolWriter.tap` (buffer, and a hand-off to the disk thread every 50 frames, with the real
   disk thread writing to a temporary directory), against the tap it replaced (two `tobytes`
   and an `asyncio.Queue.put_nowait` per frame) in the same run, as "calls per core".
2. An upload reads the spool back and cuts it into the uploader's chunks: seconds of call per
   second through the uploader's chunk generator (a fake recorder that only consumes), against
   reading the same file in one go.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np

from gateway.spool import Spool, SpoolEntry
from gateway.uploader import Uploader
from hotline.v1 import recorder_pb2 as rec

FRAMES_PER_SECOND = 50


def frames(n: int = 250) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-8000, 8000, size=(n, 2, 160), dtype=np.int16)
    return [(p[0], p[1]) for p in pcm]


def rate(fn: Callable[[], int], seconds: float) -> float:
    fn()
    done, start = 0, time.perf_counter()
    while (now := time.perf_counter()) < start + seconds:
        done += fn()
    return done / (now - start)


async def tap_rates(root: Path, seconds: float) -> tuple[float, float]:
    """Rounds of 5 000 frame pairs (100 s of call) into a new recording each; the disk thread
    catches up between rounds, outside the measurement (its own speed is the disk's)."""
    pairs = frames()
    spool = Spool(root)
    sealed: list[SpoolEntry] = []
    per_round = 5_000 // len(pairs)

    def timed_round() -> float:
        writer = spool.open("bench", "agent1", "sales", sealed.append)
        start = time.perf_counter()
        for _ in range(per_round):
            for left, right in pairs:
                writer.tap(left, right)
        elapsed = time.perf_counter() - start
        assert writer.damaged is None, writer.damaged
        spool.disk.submit(lambda: None).result()  # let the disk thread catch up
        spool.remove(writer.recording_id)
        return elapsed

    spent, done = 0.0, 0
    timed_round()
    while spent < seconds:
        spent += timed_round()
        done += per_round * len(pairs)
    ours = done / spent

    queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()

    def before() -> int:  # the live stream's tap this spool replaced
        for left, right in pairs:
            queue.put_nowait(
                (np.asarray(left, "<i2").tobytes(), np.asarray(right, "<i2").tobytes())
            )
        while not queue.empty():
            queue.get_nowait()
        return len(pairs)

    r_before = rate(before, seconds)
    await spool.close()
    return ours, r_before


class Sink:
    async def ingest(self, chunks: AsyncIterator[rec.IngestChunk], timeout_s: float) -> None:
        async for _ in chunks:
            pass

    async def close(self, grace_s: float | None = None) -> None:
        pass


async def read_rates(root: Path, seconds_of_call: int) -> tuple[float, float]:
    spool = Spool(root)
    sealed: list[SpoolEntry] = []
    writer = spool.open("bench-read", "agent1", "sales", sealed.append)
    pairs = frames()
    for i in range(seconds_of_call * FRAMES_PER_SECOND):
        writer.tap(*pairs[i % len(pairs)])
    await writer.finish()
    await spool.close()
    while not sealed:
        await asyncio.sleep(0.01)
    entry = sealed[0]
    uploader = Uploader(spool, Sink)
    loop = asyncio.get_running_loop()

    start = time.perf_counter()
    chunks = 0
    async for _ in uploader._chunks(entry, loop.create_future()):
        chunks += 1
    ours = seconds_of_call / (time.perf_counter() - start)

    start = time.perf_counter()
    spool.pcm_path(entry.recording_id).read_bytes()
    raw = seconds_of_call / (time.perf_counter() - start)
    return ours, raw


async def run(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ours, before = await tap_rates(Path(tmp) / "tap", seconds)
        print(
            f"tap: spool {ours:,.0f} frame pairs/s = {ours / FRAMES_PER_SECOND:,.0f} calls/core; "
            f"live-stream queue {before:,.0f}/s; ratio {ours / before:.2f}"
        )
        ours, raw = await read_rates(Path(tmp) / "read", 600)
        print(
            f"upload read: {ours:,.0f} s of call per second through the uploader's chunks; "
            f"raw file read {raw:,.0f}; ratio {ours / raw:.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    asyncio.run(run(ap.parse_args().seconds))


if __name__ == "__main__":
    main()
