"""What writing CDRs costs the CRM per call: each event in a transaction of its own (the
one-at-a-time path, `CdrStore.apply`) against a consumer fetch's events in one
(`CdrStore.apply_batch`), and that batch as it was written through the ORM's unit of work
before it became plain statements (kept here, `OrmBatchStore`, as the same-run baseline).

Calls are the 14 events of tests/cdr_events.py (offer, queue, bridge, hold, conference,
transfer, hang-up, wrap-up, two recordings), a new call every 5 s so about twenty are live at
once and their events interleave in time order as they reach the consumer. Each run starts
from an empty, migrated database: SQLite through aiosqlite as the CRM runs on a laptop and,
with --postgres, PostgreSQL through asyncpg (a throw-away database next to the DSN's).
CPU is this process's (aiosqlite's thread included; PostgreSQL's own server CPU is not).
On a shared machine, --repeat R runs every path R times, in turn, and keeps each one's least
CPU. --history N first fills the database with N finished calls of each of the 40 agents, as
a site that has run a while has (the end of wrap-up looks among an agent's calls), and adds a
run without the index of calls still in wrap-up (migration 0005) to compare; the ORM batch
then runs without it too, as it did before.
Run: .venv/bin/python bench/bench_cdr.py [--calls N] [--batch B] [--repeat R] [--history N]
[--postgres [DSN]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import asyncpg
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from common.events import Envelope
from crm.cdr import CdrRecord, call_id_of, end_acw, fold, leaves_wrap_up
from crm.cdr_store import CdrStore
from crm.db import Database
from crm.models import Cdr

ROOT = Path(__file__).resolve().parents[1]
PG_DSN = os.environ.get("HOTLINE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


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


class OrmBatchStore(CdrStore):
    """`apply_batch` as it was before plain statements (main at 0e63d2a): the rows loaded as
    ORM objects, folded, written back onto them and flushed by the session's unit of work;
    each end of wrap-up looked up by its own query."""

    async def apply_batch(self, envs: Sequence[Envelope]) -> int:
        call_ids = sorted({c for env in envs if (c := call_id_of(env)) is not None})
        if not call_ids and not any(leaves_wrap_up(env) for env in envs):
            return 0
        for attempt in range(3):
            async with self.db.sessions() as session:
                query = select(Cdr).where(Cdr.call_id.in_(call_ids)).order_by(Cdr.call_id)
                rows = {r.call_id: r for r in await session.scalars(query.with_for_update())}
                records = {c: CdrRecord.from_row(row) for c, row in rows.items()}
                changed: set[str] = set()
                writes = 0
                for env in envs:
                    if leaves_wrap_up(env):
                        call_id = await self._orm_open_acw(session, env, rows, records)
                        if call_id is None or not end_acw(records[call_id], _at(env)):
                            continue
                    else:
                        call_id = call_id_of(env)
                        if call_id is None:
                            continue
                        record = records.setdefault(call_id, CdrRecord(call_id))
                        if not fold(record, env):
                            continue
                    changed.add(call_id)
                    writes += 1
                if not changed:
                    return 0
                for call_id in sorted(changed):
                    row = rows.get(call_id)
                    if row is None:
                        row = rows[call_id] = Cdr(call_id=call_id)
                        session.add(row)
                    records[call_id].to_row(row)
                try:
                    await session.commit()
                except IntegrityError:
                    if attempt == 2:
                        raise
                    continue
            return writes
        return 0

    async def _orm_open_acw(
        self,
        session: AsyncSession,
        env: Envelope,
        rows: dict[str, Cdr],
        records: dict[str, CdrRecord],
    ) -> str | None:
        agent_id, at = env.agent_state_changed.agent_id, _at(env)
        best: tuple[datetime, str] | None = None
        for call_id, record in records.items():
            started = record.acw_started_at
            if (
                record.agent_id == agent_id
                and started is not None
                and record.acw_ended_at is None
                and started <= at
                and (best is None or started > best[0])
            ):
                best = (started, call_id)
        query = (
            select(Cdr)
            .where(
                Cdr.agent_id == agent_id,
                Cdr.acw_started_at.is_not(None),
                Cdr.acw_ended_at.is_(None),
                Cdr.acw_started_at <= at,
            )
            .order_by(Cdr.acw_started_at.desc())
            .limit(1)
            .with_for_update()
        )
        if records:
            query = query.where(Cdr.call_id.not_in(list(records)))
        if best is not None:
            query = query.where(Cdr.acw_started_at > best[0])
        row = await session.scalar(query)
        if row is None:
            return best[1] if best is not None else None
        rows[row.call_id] = row
        records[row.call_id] = CdrRecord.from_row(row)
        return row.call_id


def _at(env: Envelope) -> datetime:
    return env.occurred_at.ToDatetime(tzinfo=UTC)


@contextlib.asynccontextmanager
async def fresh_database(backend: str, dsn: str) -> AsyncIterator[Database]:
    """An empty, migrated CRM database, gone afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite+aiosqlite:///{tmp}/crm.sqlite")
            try:
                await db.migrate()
                yield db
            finally:
                await db.dispose()
        return
    name = f"hotline_bench_cdr_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn, timeout=3)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db = Database("postgresql+asyncpg://" + dsn.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name)
    try:
        await db.migrate()
        yield db
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


Apply = Callable[[CdrStore, list[Envelope]], Awaitable[None]]
#: the 40 agents of `workload`
AGENTS = [f"agent{n}" for n in range(40)]


async def fill_history(db: Database, per_agent: int, open_acw_index: bool) -> None:
    """`per_agent` finished calls (wrap-up ended) of every agent, a day before the workload."""
    done = datetime.now(UTC) - timedelta(days=2)
    rows = [
        {
            "call_id": f"history-{agent}-{n}",
            "agent_id": agent,
            "started_at": done,
            "acw_started_at": done,
            "acw_ended_at": done,
            "facts": {},
        }
        for n in range(per_agent)
        for agent in AGENTS  # interleaved, as calls go round the agents
    ]
    async with db.engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            await conn.execute(insert(Cdr), rows[i : i + 5000])
        if not open_acw_index:
            await conn.execute(text("DROP INDEX ix_cdrs_open_acw"))
        await conn.execute(text("ANALYZE"))


async def run(
    backend: str,
    dsn: str,
    store_type: type[CdrStore],
    envs: list[Envelope],
    apply: Apply,
    history: int = 0,
    open_acw_index: bool = True,
) -> tuple[float, float]:
    """(CPU s, wall s) of applying `envs` to a fresh CDR store."""
    async with fresh_database(backend, dsn) as db:
        if history:
            await fill_history(db, history, open_acw_index)
        store = store_type(db)
        await store.apply_batch(workload(1)[:1])  # connections and statement cache warm
        cpu, wall = time.process_time(), time.perf_counter()
        await apply(store, envs)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--history", type=int, default=0, help="finished calls per agent")
    parser.add_argument(
        "--postgres", nargs="?", const=PG_DSN, default=None, help=f"also PostgreSQL ({PG_DSN})"
    )
    args = parser.parse_args()
    envs = workload(args.calls)

    async def one_by_one(store: CdrStore, envs: list[Envelope]) -> None:
        for env in envs:
            await store.apply(env)

    async def batched(store: CdrStore, envs: list[Envelope]) -> None:
        for i in range(0, len(envs), args.batch):
            await store.apply_batch(envs[i : i + args.batch])

    paths: list[tuple[str, type[CdrStore], Apply, bool]] = [
        ("one at a time", CdrStore, one_by_one, True),
        (f"batches of {args.batch}, ORM", OrmBatchStore, batched, False),  # as before 0005
        (f"batches of {args.batch}", CdrStore, batched, True),
    ]
    if args.history:
        paths.append((f"batches of {args.batch}, no 0005", CdrStore, batched, False))
    per = 1000 / args.calls
    for backend in ["sqlite"] + (["postgresql"] if args.postgres else []):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for name, store, apply, index in paths:
                cpu, wall = await run(
                    backend, args.postgres or "", store, envs, apply, args.history, index
                )
                best[name] = min(best.get(name, (cpu, wall)), (cpu, wall))
        results = [(name, *best[name]) for name, *_ in paths]
        history = f", {args.history} earlier calls per agent" if args.history else ""
        print(f"{args.calls} calls, {len(envs)} events, {backend}{history}")
        print(f"{'path':>24} {'CPU ms/call':>12} {'wall ms/call':>13} {'CPU x ORM batch':>16}")
        orm_cpu = results[1][1]
        for name, cpu, wall in results:
            print(f"{name:>24} {cpu * per:>12.2f} {wall * per:>13.2f} {cpu / orm_cpu:>16.2f}")


if __name__ == "__main__":
    asyncio.run(main())
