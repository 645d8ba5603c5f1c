"""What writing CDRs costs the CRM per call: each event in a transaction of its own (the
one-at-a-time path, `CdrStore.apply`) against a consumer fetch's events in one
(`CdrStore.apply_batch`), on SQLite through aiosqlite as the CRM runs on a laptop.

Calls are the 14 events of tests/cdr_events.py (offer, queue, bridge, hold, conference,
transfer, hang-up, wrap-up, two recordings), a new call every 5 s so about twenty are live at
once and their events interleave in time order as they reach the consumer. Each run starts
from an empty, migrated database; CPU is the process's (aiosqlite's thread included).
Run: .venv/bin/python bench/bench_cdr.py [--calls N] [--batch B]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from common.events import Envelope
from crm.cdr_store import CdrStore
from crm.db import Database

ROOT = Path(__file__).resolve().parents[1]


def _helpers() -> ModuleType:
    """tests/cdr_events.py, the tests' own builder of a call's events (tests/ is no package
    on the path of an installed checkout, so it is loaded from its file)."""
    spec = importlib.util.spec_from_file_location("cdr_events", ROOT / "tests" / "cdr_events.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workload(calls: int) -> list[Envelope]:
    call_lifecycle = _helpers().call_lifecycle
    t0 = datetime.now(UTC) - timedelta(days=1)
    envs = [
        e
        for n in range(calls)
        for e in call_lifecycle(
            f"bench-{n}", f"agent{n % 40}", f"agent{(n + 7) % 40}", t0 + timedelta(seconds=5 * n)
        )
    ]
    return sorted(envs, key=lambda e: (e.occurred_at.seconds, e.occurred_at.nanos))


async def run(
    envs: list[Envelope], apply: Callable[[CdrStore, list[Envelope]], Awaitable[None]]
) -> tuple[float, float]:
    """(CPU s, wall s) of applying `envs` to a fresh SQLite CDR store."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/crm.sqlite")
        await db.migrate()
        store = CdrStore(db)
        await store.apply_batch(workload(1)[:1])  # connections and statement cache warm
        cpu, wall = time.process_time(), time.perf_counter()
        await apply(store, envs)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await db.dispose()
    return cpu, wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    envs = workload(args.calls)

    async def one_by_one(store: CdrStore, envs: list[Envelope]) -> None:
        for env in envs:
            await store.apply(env)

    async def batched(store: CdrStore, envs: list[Envelope]) -> None:
        for i in range(0, len(envs), args.batch):
            await store.apply_batch(envs[i : i + args.batch])

    base_cpu, base_wall = await run(envs, one_by_one)
    cpu, wall = await run(envs, batched)
    per = 1000 / args.calls
    print(f"{args.calls} calls, {len(envs)} events, SQLite")
    print(f"{'path':>22} {'CPU ms/call':>12} {'wall ms/call':>13}")
    print(f"{'one at a time':>22} {base_cpu * per:>12.2f} {base_wall * per:>13.2f}")
    print(f"{f'batches of {args.batch}':>22} {cpu * per:>12.2f} {wall * per:>13.2f}")
    print(f"{'x baseline':>22} {base_cpu / cpu:>12.1f} {base_wall / wall:>13.1f}")


if __name__ == "__main__":
    asyncio.run(main())
