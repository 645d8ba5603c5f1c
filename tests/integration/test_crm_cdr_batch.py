"""CdrStore.apply_batch and EventIntake.handle_batch against real databases (SQLite and
PostgreSQL, the fixtures of test_crm_api): a batch gives exactly the rows that applying its
events one at a time gives, whatever the batch mixes, and keeps the one-at-a-time path's
guarantees (a lost insert race is folded again, an unreachable database loses no event)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, text
from sqlalchemy.engine import make_url

from common.events import Envelope, payload_of
from crm import cdr_store
from crm import intake as crm_intake
from crm.cdr import COLUMNS, CdrRecord, end_acw, fold, leaves_wrap_up
from crm.cdr_store import CdrStore
from crm.db import Database
from crm.desk import DeskHub
from crm.intake import EventIntake
from crm.models import Cdr
from tests.cdr_events import at, call_lifecycle
from tests.integration import test_crm_api as base
from tests.integration.conftest import free_port
from tests.integration.test_crm_api import metric

pytestmark = pytest.mark.asyncio(loop_scope="module")

db = base.db  # the fixture of test_crm_api, instantiated for this module


def ids(n: int = 1) -> list[str]:
    return [f"b-{uuid.uuid4().hex[:10]}" for _ in range(n)]


def agent() -> str:
    """An agent id of its own per test: the end of wrap-up looks for the agent's calls."""
    return f"ag-{uuid.uuid4().hex[:8]}"


def folded(call_id: str, envs: Sequence[Envelope]) -> CdrRecord:
    """One call's record folded in memory, its agent's end of wrap-up included."""
    record = CdrRecord(call_id)
    for e in envs:
        if leaves_wrap_up(e):
            end_acw(record, e.occurred_at.ToDatetime(tzinfo=UTC))
        else:
            fold(record, e)
    return record


async def columns(store: CdrStore, call_id: str) -> dict[str, Any] | None:
    row = await store.get(call_id)
    return None if row is None else {n: getattr(row, n) for n in ("call_id", *COLUMNS)}


async def drop(database: Database, call_ids: Sequence[str]) -> None:
    async with database.sessions() as session:
        await session.execute(delete(Cdr).where(Cdr.call_id.in_(call_ids)))
        await session.commit()


async def one_by_one_then_batch(
    store: CdrStore, envs: Sequence[Envelope], call_ids: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    """The rows (every column) and write counts of `envs` applied one at a time and, after
    the rows were deleted, as one batch."""
    writes = sum([await store.apply(e) for e in envs])
    single = {c: await columns(store, c) for c in call_ids}
    await drop(store.db, call_ids)
    before = metric("hotline_crm_cdrs_written_total")
    batch_writes = await store.apply_batch(envs)
    assert metric("hotline_crm_cdrs_written_total") == before + batch_writes
    batched = {c: await columns(store, c) for c in call_ids}
    return single, batched, writes, batch_writes


async def test_a_whole_call_in_one_batch_gives_the_row_of_one_event_at_a_time(db: Database) -> None:
    store = CdrStore(db)
    (call_id,) = ids()
    envs = call_lifecycle(call_id, agent(), agent())
    single, batched, writes, batch_writes = await one_by_one_then_batch(store, envs, [call_id])
    assert batched == single and batch_writes == writes == 14  # the ACW's end included
    row = single[call_id]
    assert row is not None
    assert (row["hold_ms"], row["acw_ms"], len(row["transfers"]), len(row["recordings"])) == (
        6000,
        29_500,
        1,
        2,
    )
    expected = CdrRecord(call_id)
    for e in envs:
        fold(expected, e)
    assert row["talk_ms"] == expected.talk_ms and row["handle_ms"] == 77_000 + 6000 + 29_500


async def test_calls_interleaved_in_one_batch_each_get_their_own_row(db: Database) -> None:
    store = CdrStore(db)
    call_ids = ids(4)
    shared = agent()  # two calls end in the same agent's wrap-up, one after the other
    t0 = datetime.now(UTC) - timedelta(hours=1)
    per_call = [
        call_lifecycle(call_ids[0], agent(), shared, t0),
        call_lifecycle(call_ids[1], agent(), shared, t0 + timedelta(minutes=3)),
        call_lifecycle(call_ids[2], agent(), agent(), t0 + timedelta(seconds=10)),
        call_lifecycle(call_ids[3], agent(), agent(), t0 + timedelta(seconds=20))[:6],
    ]
    envs = [e for group in zip(*per_call, strict=False) for e in group]  # round robin
    envs += [e for group in per_call for e in group[len(per_call[3]) :] if e not in envs]
    assert sorted(e.event_id for e in envs) == sorted(e.event_id for g in per_call for e in g)
    single, batched, writes, batch_writes = await one_by_one_then_batch(store, envs, call_ids)
    assert batched == single and batch_writes == writes
    acw = [(single[c] or {}).get("acw_ms") for c in call_ids]
    assert acw == [29_500, 29_500, 29_500, None]


async def test_the_end_of_wrap_up_closes_the_agents_latest_open_acw_in_or_out_of_the_batch(
    db: Database,
) -> None:
    store = CdrStore(db)
    older, newer, other = ids(3)
    who = agent()
    t0 = datetime.now(UTC) - timedelta(hours=2)
    # an older call of the agent, whose wrap-up never ended, is in the database already
    old_events = call_lifecycle(older, agent(), who, t0)[:-1]
    assert await store.apply_batch(old_events) == 13
    # the newer call, its wrap-up and the end of it in one batch: the newer ACW is closed
    new_events = call_lifecycle(newer, agent(), who, t0 + timedelta(minutes=30))
    single, batched, writes, batch_writes = await one_by_one_then_batch(store, new_events, [newer])
    assert batched == single and batch_writes == writes == 14
    assert (single[newer] or {})["acw_ms"] == 29_500
    assert (await columns(store, older) or {})["acw_ended_at"] is None
    # another batch ends the older one: the database's row joins the batch
    end = call_lifecycle(older, agent(), who, t0)[-1:]
    unrelated = call_lifecycle(other, agent(), agent(), t0)[:3]
    assert await store.apply_batch([*unrelated, *end]) == 4
    assert (await columns(store, older) or {})["acw_ms"] == 29_500
    # the end of a wrap-up that is no call's (already closed, or before any) writes nothing
    assert await store.apply_batch(end) == 0


async def test_several_ends_of_one_agents_wrap_ups_in_a_batch_close_what_one_at_a_time_closes(
    db: Database,
) -> None:
    """An agent with three calls still in wrap-up in the database (their ends lost) and a
    fourth in the batch; the batch ends wrap-ups out of time order, one of them before any
    but the oldest began, and once more than there are open. Each end closes the call that
    the same ends one at a time close (the batch finds them all in its one load)."""
    t0 = datetime.now(UTC) - timedelta(hours=3)
    starts = [
        t0,
        t0 + timedelta(minutes=10),
        t0 + timedelta(minutes=20),
        t0 + timedelta(minutes=40),
    ]
    ends_at = [25, 5, 26, 27]  # minutes after t0

    async def scenario(store: CdrStore, as_batch: bool) -> tuple[list[Any], int]:
        calls, who = ids(4), agent()
        lives = [call_lifecycle(c, agent(), who, s) for c, s in zip(calls, starts, strict=True)]
        for life in lives[:3]:
            assert await store.apply_batch(life[:-1]) == 13  # wrap-up begun, never ended
        ends = []
        for n, minutes in enumerate(ends_at):
            end = Envelope()
            end.CopyFrom(lives[0][-1])  # the agent leaving wrap-up
            end.event_id = f"{calls[0]}-end-{n}"
            ends.append(at(end, t0 + timedelta(minutes=minutes)))
        batch = [*lives[3][:-1], *ends, lives[3][-1]]
        if as_batch:
            writes = await store.apply_batch(batch)
        else:
            writes = sum([await store.apply(e) for e in batch])
        return [(await columns(store, c) or {}).get("acw_ended_at") for c in calls], writes

    store = CdrStore(db)
    single, single_writes = await scenario(store, as_batch=False)
    batched, batch_writes = await scenario(store, as_batch=True)
    minute = [t0 + timedelta(minutes=m) for m in range(60)]
    assert single == [minute[5], minute[26], minute[25], starts[3] + timedelta(seconds=120)]
    assert batched == single and batch_writes == single_writes == 13 + 4


async def test_a_batch_with_more_ends_of_wrap_up_than_one_select_takes_loads_them_all(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ends of wrap-up are looked up _LEAVES_PER_LOAD at a time (SQLite's limits on one
    statement); every one of them still closes its call's ACW, in the database or the batch."""
    monkeypatch.setattr(cdr_store, "_LEAVES_PER_LOAD", 3)
    store = CdrStore(db)
    call_ids = ids(8)
    t0 = datetime.now(UTC) - timedelta(hours=4)
    lives = {
        c: call_lifecycle(c, agent(), agent(), t0 + timedelta(minutes=n))
        for n, c in enumerate(call_ids)
    }
    for c in call_ids[:4]:  # half of them wait in wrap-up in the database already
        assert await store.apply_batch(lives[c][:-1]) == 13
    envs = [e for c in call_ids[4:] for e in lives[c][:-1]] + [lives[c][-1] for c in call_ids]
    assert await store.apply_batch(envs) == 4 * 13 + 8
    for c in call_ids:
        row = await store.get(c)
        assert row is not None and CdrRecord.from_row(row) == folded(c, lives[c])
        assert row.acw_ms == 29_500


async def test_batches_of_every_size_share_a_few_load_statements(db: Database) -> None:
    """The load statement's shape follows the batch's number of calls and of ends of wrap-up;
    made up to powers of two, batches ending 1 to 12 wrap-ups at once prepare 5 statements,
    not 12 (every prepared shape is kept by the driver: the CRM's memory grew with the
    shapes), and the padding changes no row."""
    executed: set[str] = set()

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "LIMIT" in statement:  # the load, with ends of wrap-up
            executed.add(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        store = CdrStore(db)
        t0 = datetime.now(UTC) - timedelta(hours=5)
        for n in range(1, 13):
            calls = ids(n)
            lives = [call_lifecycle(c, agent(), agent(), t0) for c in calls]
            for life in lives:  # each call up to its wrap-up, in the database
                assert await store.apply_batch(life[:-1]) == 13
            assert await store.apply_batch([life[-1] for life in lives]) == n  # n ends at once
            for c, life in zip(calls, lives, strict=True):
                row = await store.get(c)
                assert row is not None and CdrRecord.from_row(row) == folded(c, life)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    # ends of wrap-up 1, 2, 3-4, 5-8, 9-16 at once: 5 shapes
    assert len(executed) == 5, f"{len(executed)} shapes of the load with ends of wrap-up"


async def test_a_duplicate_in_a_batch_changes_nothing_twice(db: Database) -> None:
    store = CdrStore(db)
    (call_id,) = ids()
    envs = call_lifecycle(call_id, agent(), agent())
    shuffled = envs[:-1]  # the end of wrap-up (the last) only ends an ACW already started
    random.Random(11).shuffle(shuffled)
    redelivered = [*shuffled, envs[-1], *envs[3:9]]
    single, batched, writes, batch_writes = await one_by_one_then_batch(
        store, redelivered, [call_id]
    )
    assert batched == single and batch_writes == writes
    assert await store.apply_batch(envs) == 0  # all known
    expected = CdrRecord(call_id)
    for e in envs:
        fold(expected, e)
    row = await store.get(call_id)
    assert row is not None
    record = CdrRecord.from_row(row)
    assert (record.talk_ms, record.hold_ms, record.transfers) == (
        expected.talk_ms,
        expected.hold_ms,
        expected.transfers,
    )


class RacingStore(CdrStore):
    """A store that lets another replica insert the batch's calls right after it looked."""

    def __init__(self, database: Database, rival: CdrStore, rival_events: list[Envelope]):
        super().__init__(database)
        self.rival, self.rival_events, self.loads = rival, rival_events, 0

    async def _load(self, conn: Any, *args: Any) -> dict[str, Any]:
        rows = await super()._load(conn, *args)
        self.loads += 1
        if self.rival_events:
            events, self.rival_events = self.rival_events, []
            assert await self.rival.apply_batch(events) == len(events)
        return rows


async def test_an_insert_race_with_another_replica_is_folded_again_onto_their_row(
    db: Database,
) -> None:
    other = Database(db.url)  # another replica: its own engine and connections
    try:
        (call_id,) = ids()
        envs = call_lifecycle(call_id, agent(), agent())
        ours, theirs = envs[:3] + envs[9:], envs[3:9]
        store = RacingStore(db, CdrStore(other), list(theirs))
        assert await store.apply_batch(ours) == len(ours)
        assert store.loads == 2, "the lost insert rolled back and the batch was folded again"
        row = await store.get(call_id)
        assert row is not None and CdrRecord.from_row(row) == folded(call_id, envs)
    finally:
        await other.dispose()


@contextlib.asynccontextmanager
async def tcp_proxy(port: int, target: tuple[str, int]) -> AsyncIterator[Any]:
    """A TCP proxy to `target` that can be cut (listener closed, connections dropped) and
    restored on the same port."""

    class Proxy:
        server: asyncio.Server | None = None
        writers: set[asyncio.StreamWriter] = set()

        async def up(self) -> None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

        async def down(self) -> None:
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()
                self.server = None
            for w in list(self.writers):
                w.transport.abort()
            self.writers.clear()

        async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(*target)
            self.writers |= {writer, up_writer}

            async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await r.read(65536):
                        w.write(data)
                        await w.drain()
                w.transport.abort()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    proxy = Proxy()
    await proxy.up()
    try:
        yield proxy
    finally:
        await proxy.down()


async def test_a_batch_waits_out_an_unreachable_database_and_loses_no_event(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("a SQLite file cannot become unreachable; PostgreSQL behind a proxy can")
    monkeypatch.setattr(crm_intake, "RETRY_MAX_S", 0.5)
    url = make_url(db.url)
    port = free_port()
    async with tcp_proxy(port, (url.host or "127.0.0.1", url.port or 5432)) as proxy:
        remote = Database(url.set(host="127.0.0.1", port=port).render_as_string(False))
        try:
            store = CdrStore(remote)
            intake = EventIntake(DeskHub(remote, store), store)
            (call_id,) = ids()
            envs = call_lifecycle(call_id, agent(), agent())
            await intake.handle_batch(envs[:4])  # the pool holds a connection now
            await proxy.down()
            task = asyncio.create_task(intake.handle_batch(envs[4:]))
            await asyncio.sleep(2.0)  # several attempts fail meanwhile
            assert not task.done(), "the batch is not given up while the database is away"
            await proxy.up()
            await asyncio.wait_for(task, 30)
        finally:
            await remote.dispose()
    row = await CdrStore(db).get(call_id)
    assert row is not None and CdrRecord.from_row(row) == folded(call_id, envs)


async def test_a_batch_chosen_to_give_way_in_a_deadlock_is_written_again(db: Database) -> None:
    """Two writers lock the same two rows in opposite orders (here the test, standing in for a
    second CRM replica): PostgreSQL aborts one of them. The CRM's batch is the one aborted (the
    other side waits 10 s before looking for deadlocks); it is written again, nothing lost."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite has no row locks to deadlock on")
    store = CdrStore(db)
    intake = EventIntake(DeskHub(db, store), store)
    # the batch locks its rows in call id order: its own call's row first, then the older one
    mine, older = sorted(ids(2))
    who = agent()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    # the agent's older call, in wrap-up still; and a call whose row the batch locks first
    await store.apply_batch(call_lifecycle(older, agent(), who, t0)[:-1])
    mine_events = call_lifecycle(mine, agent(), agent(), t0 + timedelta(minutes=10))
    await store.apply_batch(mine_events[:2])
    async with db.engine.connect() as other:
        await other.begin()
        await other.execute(text("SET LOCAL deadlock_timeout = '10s'"))
        await other.execute(
            text("SELECT call_id FROM cdrs WHERE call_id = :c FOR UPDATE"), {"c": older}
        )
        # the batch locks its call's row, then waits for the older row to end that ACW
        end_of_wrap_up = call_lifecycle(older, agent(), who, t0)[-1]
        task = asyncio.create_task(intake.handle_batch([mine_events[2], end_of_wrap_up]))
        for _ in range(500):
            waiting = await other.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the batch never waited for the older row"
        # now the other side wants the batch's row: a deadlock, and the batch gives way
        await other.execute(
            text("SELECT call_id FROM cdrs WHERE call_id = :c FOR UPDATE"), {"c": mine}
        )
        await other.rollback()
    await asyncio.wait_for(task, 30)
    assert (await columns(store, older) or {})["acw_ms"] == 29_500
    assert (await columns(store, mine) or {})["agent_id"] != ""


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_a_reader_in_a_long_transaction_does_not_hold_up_cdr_writes_on_sqlite(
    db: Database,
) -> None:
    """A report reading the CRM's SQLite file in one long transaction (another process's
    connection) while the intake writes: with SQLite's rollback journal the write needs the
    whole file and fails with "database is locked" once the driver's timeout runs out; with
    the write-ahead log it commits while the reader goes on seeing its own snapshot."""
    store = CdrStore(db)
    (call_id,) = ids()
    path = make_url(db.url).database
    assert path is not None
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        reader.execute("BEGIN")
        before = reader.execute("SELECT count(*) FROM cdrs").fetchone()
        assert await store.apply_batch(call_lifecycle(call_id, agent(), agent())) == 14
        assert reader.execute("SELECT count(*) FROM cdrs").fetchone() == before  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute(
            "SELECT count(*) FROM cdrs WHERE call_id = ?", (call_id,)
        ).fetchone() == (1,)
    finally:
        reader.close()
    row = await columns(store, call_id)
    assert row is not None and row["hold_ms"] == 6000


class _SeeingHub(DeskHub):
    """A desk hub that notes, at each push, the event and whom the CDR names then."""

    def __init__(self, db: Database, store: CdrStore) -> None:
        super().__init__(db, store)
        self.seen: list[tuple[str, str]] = []

    async def on_event(self, env: Envelope) -> None:
        call_id = getattr(payload_of(env), "call_id", "")
        self.seen.append((env.type, await self.cdrs.agent_of(call_id) if call_id else ""))


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batch"])
async def test_a_transfer_is_pushed_once_the_cdr_names_the_new_agent(
    db: Database, batched: bool
) -> None:
    """The desk of the agent a call is transferred to restores the call from its CDR, which
    it may read only once the CDR names that agent: that push waits for the write (it went
    first, and a busy desk was refused the call: "no call"), and the order of pushes stays."""
    store = CdrStore(db)
    hub = _SeeingHub(db, store)
    intake = EventIntake(hub, store)
    (call_id,) = ids()
    first, second = agent(), agent()
    envs = call_lifecycle(call_id, first, second)
    if batched:
        await intake.handle_batch(envs)
    else:
        for env in envs:
            await intake.handle(env)
    assert [t for t, _ in hub.seen] == [e.type for e in envs], "every push, in order"
    at_transfer = [who for t, who in hub.seen if t == "CallTransferred"]
    assert at_transfer == [second]
