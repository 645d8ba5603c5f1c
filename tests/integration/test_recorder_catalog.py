"""The catalog's write path: on a SQLite file every write transaction runs on the catalog's own
thread and synchronous connection (one hand-off instead of several per statement), and reads
through the async engine see it at once; the async engine is the path for other databases and
an in-memory SQLite. Both paths keep the same conditions (primary key, status guards)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from recorder.catalog import COMPLETE, FAILED, RECORDING, Catalog, Recording, migrate, open_engine
from recorder.storage import recording_key


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[Catalog]:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'recorder.sqlite'}")
    await migrate(engine)
    catalog = Catalog(engine)
    try:
        yield catalog
    finally:
        await catalog.close()
        await engine.dispose()


def new_row() -> Recording:
    rid = str(uuid.uuid4())
    started = datetime.now(UTC) - timedelta(seconds=5)
    return Recording(
        recording_id=rid,
        call_id="call-1",
        path=recording_key(rid, started),
        sample_rate=8000,
        channels=2,
        started_at=started,
        status=RECORDING,
        holds=[{"start_ms": 0, "end_ms": 500, "leg_id": "a", "held_by": "agent"}],
    )


async def finish(catalog: Catalog, rid: str, status: str = COMPLETE) -> bool:
    return await catalog.finish(
        rid,
        status=status,
        ended_at=datetime.now(UTC),
        duration_ms=2000,
        size_bytes=64_044,
        sha256="ab" * 32,
    )


async def test_sqlite_writes_run_on_the_catalogs_thread_and_reads_see_them(
    catalog: Catalog,
) -> None:
    assert catalog.write_engine is not None
    threads: dict[str, list[str]] = {"write": [], "async": []}

    def on(name: str) -> Any:
        def record(*_: Any) -> None:
            threads[name].append(threading.current_thread().name)

        return record

    event.listen(catalog.write_engine, "before_cursor_execute", on("write"))
    event.listen(catalog.engine.sync_engine, "before_cursor_execute", on("async"))
    row = new_row()
    await catalog.begin(row)
    assert await finish(catalog, row.recording_id)
    stored = await catalog.get(row.recording_id)
    assert stored is not None and stored.status == COMPLETE and stored.holds == row.holds
    assert await catalog.mark_announced([stored], datetime.now(UTC)) == 1
    assert await catalog.restart(row.recording_id, from_status=COMPLETE, holds=[])
    again = await catalog.get(row.recording_id)
    assert again is not None and again.status == RECORDING and again.announced_at is None

    assert len(threads["write"]) == 4  # insert, finish, mark, restart: no statement elsewhere
    assert {name.split("_")[0] for name in threads["write"]} == {"recorder-catalog"}
    assert len(threads["async"]) == 2  # the two reads


@pytest.mark.parametrize("path", ["catalog thread", "async engine"])
async def test_both_write_paths_keep_the_key_and_the_status_guards(
    catalog: Catalog, path: str
) -> None:
    if path == "async engine":
        catalog.write_engine = None
    row = new_row()
    await catalog.begin(row)
    with pytest.raises(IntegrityError):  # the same id twice: a retried or concurrent upload
        await catalog.begin(new_row_with(row.recording_id))
    assert await finish(catalog, row.recording_id, FAILED)
    assert not await finish(catalog, row.recording_id)  # no longer `recording`
    assert not await catalog.restart(row.recording_id, from_status=COMPLETE)
    assert await catalog.restart(row.recording_id, from_status=FAILED)
    assert await finish(catalog, row.recording_id)
    stored = await catalog.get(row.recording_id)
    assert stored is not None and stored.status == COMPLETE
    assert await catalog.mark_announced([stored], datetime.now(UTC)) == 1
    assert await catalog.mark_announced([stored], datetime.now(UTC)) == 0  # marked already


async def test_a_closed_write_path_opens_again_for_a_late_write(catalog: Catalog) -> None:
    row = new_row()
    await catalog.begin(row)
    await catalog.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("recorder-catalog")]
    assert await finish(catalog, row.recording_id)
    stored = await catalog.get(row.recording_id)
    assert stored is not None and stored.status == COMPLETE


async def test_in_memory_sqlite_writes_through_the_async_engine() -> None:
    engine = open_engine("sqlite+aiosqlite:///:memory:")
    try:
        assert Catalog(engine).write_engine is None
    finally:
        await engine.dispose()


def new_row_with(recording_id: str) -> Recording:
    row = new_row()
    row.recording_id = recording_id
    row.path = recording_key(recording_id, row.started_at)
    return row
