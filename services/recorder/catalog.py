"""The recording catalog: one row per recording, in the recorder's own database.

The row is written when a stream starts (status `recording`) and completed when the file is
stored, so a recording interrupted by a crash is still known and can be salvaged. The row
also remembers whether `RecordingReady` went out (`announced_at`), which makes the catalog
the outbox of the recordings topic.

Every recording costs a few write transactions (register, finish, and its share of a marking),
so on SQLite they do not go through the async engine: there each statement is four or five
hand-offs between the event loop and aiosqlite's thread (cursor, execute, close, commit, the
pool's reset) with SQLAlchemy's greenlet around each, several times the CPU of the SQL. A
write transaction is one hand-off to the catalog's own thread, which runs it on a synchronous
connection to the same file (`Catalog._write`). Other databases (PostgreSQL: asyncpg has no
thread) run the same statements inside the async engine's transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import Select

from common.dbmetrics import instrument
from common.dbtypes import UtcDateTime
from common.sqlite import make_directory, use_wal

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: own version table: several services may share one database (HOTLINE_DATABASE_URL)
VERSION_TABLE = "recorder_alembic_version"

RECORDING = "recording"
COMPLETE = "complete"
PARTIAL = "partial"
FAILED = "failed"
STATUSES = (RECORDING, COMPLETE, PARTIAL, FAILED)
#: statuses whose audio is worth announcing to the rest of the platform
ANNOUNCED_STATUSES = (COMPLETE, PARTIAL)

_T = TypeVar("_T")


class Base(DeclarativeBase):
    pass


class Recording(Base):
    """Metadata of one recording; `path` is the store key, not a filesystem path."""

    __tablename__ = "recordings"
    __table_args__ = (
        Index("ix_recordings_call_id", "call_id"),
        Index("ix_recordings_agent_started", "agent_id", "started_at"),
        Index("ix_recordings_started_at", "started_at"),
        Index("ix_recordings_status", "status"),
    )

    recording_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(255))
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str] = mapped_column(String(128), default="")
    queue: Mapped[str] = mapped_column(String(128), default="")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)
    announced_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: the call's holds within the recording, oldest first: {"start_ms", "end_ms", "leg_id",
    #: "held_by"} (offsets from the first sample), as the gateway marked them
    holds: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


#: the table, for the catalog's plain (Core) statements
RECORDINGS = cast(Table, Recording.__table__)


def open_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so concurrent streams do not trip
    over each other's short transactions."""
    make_directory(url)
    return use_wal(instrument(create_async_engine(url)))


def write_engine(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the SQLite file of `engine`, for the catalog's writes (see the
    module's docstring); None for other databases, and for an in-memory SQLite (another
    connection would not see it)."""
    url = engine.url
    if engine.dialect.name != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return use_wal(instrument(create_engine(url.set(drivername="sqlite"))))


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision (run at every start; idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


# The writes every recording makes, built once: building an UPDATE and its cache key cost
# three times the CPU of running it on SQLite (~290 against ~80 us a transaction).
_REGISTER = insert(RECORDINGS)
_FINISH = (
    update(RECORDINGS)
    .where(RECORDINGS.c.recording_id == bindparam("rid"), RECORDINGS.c.status == RECORDING)
    .values(
        status=bindparam("new_status"),
        ended_at=bindparam("new_ended_at"),
        duration_ms=bindparam("new_duration_ms"),
        bytes=bindparam("new_bytes"),
        sha256=bindparam("new_sha256"),
        failure=bindparam("new_failure"),
    )
)
_MARK_ANNOUNCED = (
    update(RECORDINGS)
    .where(
        RECORDINGS.c.recording_id == bindparam("rid"),
        RECORDINGS.c.status == bindparam("was_status"),
        RECORDINGS.c.sha256.is_not_distinct_from(bindparam("was_sha256")),
        RECORDINGS.c.announced_at.is_(None),
    )
    .values(announced_at=bindparam("at"))
)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (summed over an executemany)."""
    return int(getattr(result, "rowcount", 0) or 0)


class Catalog:
    """Queries and updates of the recordings table; returns detached `Recording` rows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False)
        #: SQLite: the engine every write transaction runs on, in `_writer`'s thread; None:
        #: writes go through `engine`
        self.write_engine = write_engine(engine)
        self._writer: ThreadPoolExecutor | None = None

    async def _write(self, work: Callable[[Connection], _T]) -> _T:
        """Run `work` (plain statements on a connection) as one transaction and return what it
        returns; on SQLite in one hand-off to the catalog's thread, so a write costs one
        thread hop instead of several per statement."""
        if self.write_engine is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        if self._writer is None:  # one thread: SQLite takes one writer at a time anyway
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="recorder-catalog")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._transaction, work)

    def _transaction(self, work: Callable[[Connection], _T]) -> _T:
        assert self.write_engine is not None
        with self.write_engine.begin() as conn:
            return work(conn)

    async def close(self) -> None:
        """Close the write path's connections (in its thread, which opened them) and end the
        thread; at stop, once nothing writes any more. A later write opens them again."""
        writer, self._writer = self._writer, None
        if writer is None or self.write_engine is None:
            return
        await asyncio.get_running_loop().run_in_executor(writer, self.write_engine.dispose)
        await asyncio.to_thread(writer.shutdown)

    async def begin(self, recording: Recording) -> None:
        """Register a recording that is starting (status `recording`); IntegrityError if the
        catalog has its id already.

        The writes here are plain statements on a connection, not ORM sessions: a recording
        costs a handful of them, and the session machinery around each (unit of work, identity
        map, its own rollback on close) cost more CPU than the statement (bench_recorder.py).
        `recording` stays a detached object the caller keeps using.
        """
        values = {
            column.key: value
            for column in RECORDINGS.columns
            if (value := getattr(recording, column.key)) is not None
        }  # unset attributes get the column defaults
        await self._write(lambda conn: conn.execute(_REGISTER, values))

    async def finish(
        self,
        recording_id: str,
        *,
        status: str,
        ended_at: datetime,
        duration_ms: int,
        size_bytes: int,
        sha256: str | None,
        failure: str | None = None,
    ) -> bool:
        """Record how a recording ended; False if it was no longer `recording`.

        The status condition makes finishing safe when two recorder replicas both try to
        salvage the same abandoned recording.
        """
        if status not in STATUSES or status == RECORDING:
            raise ValueError(f"cannot finish a recording as {status!r}")
        params = {
            "rid": recording_id,
            "new_status": status,
            "new_ended_at": ended_at,
            "new_duration_ms": duration_ms,
            "new_bytes": size_bytes,
            "new_sha256": sha256,
            "new_failure": failure,
        }
        return await self._write(lambda conn: _rowcount(conn.execute(_FINISH, params)) == 1)

    async def restart(
        self,
        recording_id: str,
        *,
        from_status: str,
        holds: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Make a recording `recording` again, for an upload that replaces what was stored
        under its id (a cut upload, an orphan of a crash), with that upload's `holds`; False
        if its status was no longer `from_status` (another stream got there first)."""
        stmt = (
            update(RECORDINGS)
            .where(RECORDINGS.c.recording_id == recording_id, RECORDINGS.c.status == from_status)
            .values(
                status=RECORDING,
                ended_at=None,
                duration_ms=0,
                bytes=0,
                sha256=None,
                failure=None,
                announced_at=None,
                holds=list(holds or []),
            )
        )
        return await self._write(lambda conn: _rowcount(conn.execute(stmt)) == 1)

    async def mark_announced(self, rows: Sequence[Recording], at: datetime) -> int:
        """Note that RecordingReady went out for each of `rows` (one statement, one commit for
        the batch); returns how many rows were marked.

        A row is marked only while it is still what was announced: same status and checksum,
        not marked yet. A re-upload that replaced it meanwhile (`restart`, then a new
        `finish`) leaves it unmarked, so the new content is announced too.
        """
        if not rows:
            return 0
        params = [
            {"rid": r.recording_id, "was_status": r.status, "was_sha256": r.sha256, "at": at}
            for r in rows
        ]
        return await self._write(lambda conn: _rowcount(conn.execute(_MARK_ANNOUNCED, params)))

    async def _all(self, stmt: Select[Recording]) -> list[Recording]:
        async with self._session() as session:
            return list((await session.scalars(stmt)).all())

    async def get(self, recording_id: str) -> Recording | None:
        async with self._session() as session:
            return await session.get(Recording, recording_id)

    async def by_call(self, call_id: str) -> list[Recording]:
        """All recordings of a call (transfers and consultations may make several), oldest first."""
        return await self._all(
            select(Recording).where(Recording.call_id == call_id).order_by(Recording.started_at)
        )

    async def by_agent(
        self,
        agent_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Recording]:
        """An agent's recordings, newest first, optionally within [since, until)."""
        stmt = select(Recording).where(Recording.agent_id == agent_id)
        if since is not None:
            stmt = stmt.where(Recording.started_at >= since)
        if until is not None:
            stmt = stmt.where(Recording.started_at < until)
        return await self._all(stmt.order_by(Recording.started_at.desc()).limit(limit))

    async def between(
        self,
        since: datetime,
        until: datetime,
        *,
        statuses: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Recording]:
        """Recordings started within [since, until), oldest first (retention, QA sampling)."""
        stmt = select(Recording).where(Recording.started_at >= since, Recording.started_at < until)
        if statuses is not None:
            stmt = stmt.where(Recording.status.in_(list(statuses)))
        return await self._all(stmt.order_by(Recording.started_at).limit(limit))

    async def in_progress(self) -> list[Recording]:
        """Recordings still marked `recording`: live streams, or orphans of a crash."""
        return await self._all(
            select(Recording).where(Recording.status == RECORDING).order_by(Recording.started_at)
        )

    async def unannounced_among(self, recording_ids: Sequence[str]) -> list[Recording]:
        """Those of `recording_ids` that are stored and not yet announced (the announcer's
        batch, read in one query)."""
        if not recording_ids:
            return []
        return await self._all(
            select(Recording).where(
                Recording.recording_id.in_(list(recording_ids)),
                Recording.status.in_(ANNOUNCED_STATUSES),
                Recording.announced_at.is_(None),
            )
        )

    async def unannounced(self, limit: int = 1000) -> list[Recording]:
        """Stored recordings whose `RecordingReady` has not reached the broker yet."""
        return await self._all(
            select(Recording)
            .where(Recording.status.in_(ANNOUNCED_STATUSES), Recording.announced_at.is_(None))
            .order_by(Recording.started_at)
            .limit(limit)
        )
