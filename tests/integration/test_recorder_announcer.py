"""The recorder's outbox: the catalog row is committed first, then RecordingReady goes out, then
the row is marked announced — in batches, with a real SQLite catalog (migrated by Alembic) and
the real announcer. The broker is a stand-in that can fail or hang, so the failures in between
can be placed exactly: a batch that fails stays unannounced and goes out later with the same
event ids; a crash between publishing and marking, or between committing and announcing, is
made good at the next start, with the same event ids.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.message import Message

from common.events import Envelope, envelope
from recorder import announcer as announcer_module
from recorder.announcer import Announcer
from recorder.catalog import COMPLETE, PARTIAL, RECORDING, Catalog, Recording, migrate, open_engine
from recorder.notifier import RecorderNotifier, ready_event_id, recording_ready
from recorder.storage import recording_key


class Broker:
    """Takes published batches; `failures` batches are refused first; with `hang`, a batch is
    taken and never acknowledged (the process dies before it hears back)."""

    def __init__(self, failures: int = 0, hang: bool = False) -> None:
        self.failures = failures
        self.hang = hang
        self.attempts: list[list[str]] = []  # event ids of each attempt
        self.batches: list[list[Envelope]] = []  # what the broker has
        self.failed = asyncio.Event()

    async def publish_batch(
        self, items: Sequence[tuple[Message, str, str, Mapping[str, str]]]
    ) -> list[Envelope]:
        self.attempts.append([event_id for _, _, event_id, _ in items])
        if self.failures:
            self.failures -= 1
            self.failed.set()
            raise ConnectionError("broker down")
        envs = [envelope(p, key, "test", "recorder", eid) for p, key, eid, _ in items]
        self.batches.append(envs)
        if self.hang:
            await asyncio.Event().wait()
        return envs

    @property
    def event_ids(self) -> list[str]:
        return [env.event_id for batch in self.batches for env in batch]

    @property
    def recording_ids(self) -> list[str]:
        return [env.recording_ready.recording_id for batch in self.batches for env in batch]


@pytest.fixture(params=["catalog thread", "async engine"])
async def catalog(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Catalog]:
    """Both write paths: SQLite's own thread, and the async engine other databases use."""
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'recorder.sqlite'}")
    await migrate(engine)
    catalog = Catalog(engine)
    if request.param == "async engine":
        catalog.write_engine = None
    try:
        yield catalog
    finally:
        await catalog.close()
        await engine.dispose()


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(announcer_module, "RETRY_S", 0.05)


async def stored(catalog: Catalog, n: int, status: str = COMPLETE) -> list[Recording]:
    """`n` recordings registered and finished in the catalog (committed), not announced."""
    rows = []
    base = datetime.now(UTC) - timedelta(minutes=1)
    for i in range(n):
        rid = str(uuid.uuid4())
        started = base + timedelta(seconds=i)
        await catalog.begin(
            Recording(
                recording_id=rid,
                call_id=f"call-{i}",
                path=recording_key(rid, started),
                sample_rate=8000,
                channels=2,
                started_at=started,
                status=RECORDING,
            )
        )
        assert await catalog.finish(
            rid,
            status=status,
            ended_at=started + timedelta(seconds=2),
            duration_ms=2000,
            size_bytes=64_044,
            sha256=f"{i:064x}",
        )
        row = await catalog.get(rid)
        assert row is not None
        rows.append(row)
    return rows


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    async def wait() -> None:
        while not await check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout_s)


def expected_ids(rows: Sequence[Recording]) -> list[str]:
    return [ready_event_id(recording_ready(r)) for r in rows]


async def test_recordings_queued_together_go_out_in_one_batch(catalog: Catalog) -> None:
    rows = await stored(catalog, 5)
    broker = Broker()
    announcer = Announcer(catalog, RecorderNotifier(broker))
    # queued before the announcer runs: as when several streams finish while it publishes
    waits = [
        asyncio.create_task(announcer.announce(r.recording_id, wait_s=5.0, row=r)) for r in rows
    ]
    await asyncio.sleep(0)
    announcer.start()
    try:
        assert all(await asyncio.gather(*waits))  # each stream hears it went out
    finally:
        await announcer.stop()

    assert [len(b) for b in broker.batches] == [5]  # one publish, in the order queued
    assert broker.recording_ids == [r.recording_id for r in rows]
    assert broker.event_ids == expected_ids(rows)
    assert [env.key for env in broker.batches[0]] == [r.call_id for r in rows]
    assert await catalog.unannounced() == []
    marked = {row.announced_at for row in await catalog.by_agent("")}
    assert len(marked) == 1 and None not in marked  # one statement marked them all


async def test_a_failed_publish_keeps_them_unannounced_until_a_retry_with_the_same_ids(
    catalog: Catalog,
) -> None:
    rows = await stored(catalog, 3)
    broker = Broker(failures=2)
    announcer = Announcer(catalog, RecorderNotifier(broker))
    for r in rows:
        await announcer.announce(r.recording_id, row=r)
    announcer.start()
    try:
        await asyncio.wait_for(broker.failed.wait(), 5)
        assert {r.recording_id for r in await catalog.unannounced()} == {
            r.recording_id for r in rows
        }
        await until(lambda: _none_unannounced(catalog))
    finally:
        await announcer.stop()

    assert len(broker.attempts) == 3
    assert broker.attempts[0] == broker.attempts[1] == broker.attempts[2] == expected_ids(rows)
    assert broker.event_ids == expected_ids(rows)  # delivered once, by the third attempt


async def _none_unannounced(catalog: Catalog) -> bool:
    return not await catalog.unannounced()


async def test_a_crash_between_publishing_and_marking_repeats_the_same_event(
    catalog: Catalog,
) -> None:
    """The broker took the batch but the recorder died before it marked the rows: the next
    start announces them again with the same event ids, which consumers drop."""
    rows = await stored(catalog, 2)
    broker = Broker(hang=True)
    first = Announcer(catalog, RecorderNotifier(broker))
    for r in rows:
        await first.announce(r.recording_id, row=r)
    first.start()
    await until(lambda: _published(broker, 2))
    await first.stop()  # the crash: published, never marked
    assert len(await catalog.unannounced()) == 2

    broker.hang = False
    second = Announcer(catalog, RecorderNotifier(broker))  # the next start
    second.start()
    try:
        await until(lambda: _none_unannounced(catalog))
    finally:
        await second.stop()
    assert broker.recording_ids == [r.recording_id for r in rows] * 2
    assert broker.event_ids == expected_ids(rows) * 2


async def _published(broker: Broker, n: int) -> bool:
    return len(broker.event_ids) >= n


async def test_a_crash_between_committing_and_announcing_is_announced_at_start(
    catalog: Catalog,
) -> None:
    """Stored and committed, never queued (the recorder died right after the commit): the next
    start finds them in the catalog and announces them, oldest first, partial ones too."""
    rows = [*await stored(catalog, 2), *await stored(catalog, 1, status=PARTIAL)]
    rows.sort(key=lambda r: r.started_at)
    broker = Broker()
    announcer = Announcer(catalog, RecorderNotifier(broker))
    announcer.start()
    try:
        await until(lambda: _none_unannounced(catalog))
    finally:
        await announcer.stop()
    assert broker.recording_ids == [r.recording_id for r in rows]
    assert broker.event_ids == expected_ids(rows)


async def test_a_recording_replaced_meanwhile_is_not_marked_by_the_old_announcement(
    catalog: Catalog,
) -> None:
    """A re-upload restarted and finished the row with other audio while its earlier content
    was being announced: marking the old announcement leaves the new content unannounced."""
    [old] = await stored(catalog, 1, status=PARTIAL)
    assert await catalog.restart(old.recording_id, from_status=PARTIAL)
    assert await catalog.finish(
        old.recording_id,
        status=PARTIAL,
        ended_at=old.started_at + timedelta(seconds=3),
        duration_ms=3000,
        size_bytes=96_044,
        sha256="f" * 64,
    )
    assert await catalog.mark_announced([old], datetime.now(UTC)) == 0
    [new] = await catalog.unannounced()
    assert new.sha256 == "f" * 64
    assert await catalog.mark_announced([new, new], datetime.now(UTC)) == 1
    assert await catalog.unannounced() == []


async def test_a_recording_queued_twice_goes_out_once(catalog: Catalog) -> None:
    """Salvage and a stream may both queue one recording: the batch reads it once, and a
    recording already marked is not announced again."""
    [row] = await stored(catalog, 1)
    broker = Broker()
    announcer = Announcer(catalog, RecorderNotifier(broker))
    await announcer.announce(row.recording_id, row=row)
    await announcer.announce(row.recording_id)
    announcer.start()
    try:
        await until(lambda: _none_unannounced(catalog))
        assert await announcer.announce(row.recording_id, wait_s=5.0)  # answered, not resent
    finally:
        await announcer.stop()
    assert broker.recording_ids == [row.recording_id]


async def test_recordings_published_one_by_one_are_marked_together(catalog: Catalog) -> None:
    """Marking is bookkeeping: each stream hears its recording went out as soon as the broker
    has it, and what was published within the mark interval is marked by one statement (here
    at stop, the interval being long)."""
    await stored(catalog, 1)  # found at start: once it is out, the start is over
    broker = Broker()
    announcer = Announcer(catalog, RecorderNotifier(broker), mark_every_s=60.0)
    announcer.start()
    try:
        await until(lambda: _published(broker, 1))
        for r in await stored(catalog, 3):  # stored and announced one after the other
            assert await announcer.announce(r.recording_id, wait_s=5.0, row=r)
        assert [len(b) for b in broker.batches] == [1, 1, 1, 1]
        assert len(await catalog.unannounced()) == 4  # published, not marked yet
    finally:
        await announcer.stop()
    assert await catalog.unannounced() == []
    marked = {row.announced_at for row in await catalog.by_agent("")}
    assert len(marked) == 1 and None not in marked  # one statement marked them all


async def test_marks_are_written_once_the_interval_is_up(catalog: Catalog) -> None:
    [row] = await stored(catalog, 1)
    announcer = Announcer(catalog, RecorderNotifier(Broker()), mark_every_s=0.05)
    announcer.start()
    try:
        assert await announcer.announce(row.recording_id, wait_s=5.0, row=row)
        await until(lambda: _none_unannounced(catalog))  # without a stop or another publish
    finally:
        await announcer.stop()


async def test_marks_that_cannot_be_written_leave_the_recordings_to_the_next_start(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses the marks (down, or the process dies before they are written): the
    next start announces those recordings again with the same event ids."""
    rows = await stored(catalog, 2)
    broker = Broker()
    first = Announcer(catalog, RecorderNotifier(broker), mark_every_s=0.05)
    refused = asyncio.Event()

    async def refuse(*_: object) -> int:
        refused.set()
        raise ConnectionError("database down")

    monkeypatch.setattr(catalog, "mark_announced", refuse)
    first.start()
    try:
        for r in rows:
            await first.announce(r.recording_id, row=r)
        await asyncio.wait_for(refused.wait(), 5)
    finally:
        await first.stop()
    monkeypatch.undo()
    assert len(await catalog.unannounced()) == 2

    second = Announcer(catalog, RecorderNotifier(broker))  # the next start
    second.start()
    try:
        await until(lambda: _none_unannounced(catalog))
    finally:
        await second.stop()
    assert broker.event_ids == expected_ids(rows) * 2
