"""SQLite as a service's database: a write-ahead log and a busy timeout on every connection.

In SQLite's default rollback-journal mode each commit creates, syncs and deletes a journal
beside the database (two fsyncs or more), and a reader keeps the writer out for as long as it
reads: a supervisor's report in the desk would hold up the CRM's CDR writes, and the writer
would fail with "database is locked" after the driver's timeout. With a write-ahead log a
commit is one append and one fsync, readers and the writer no longer wait for each other, and
two writers wait up to the busy timeout for each other instead of failing at once.
`synchronous` stays FULL: a committed row survives a power loss, which the services need
because the Kafka offset behind it is committed right after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["BUSY_TIMEOUT_MS", "make_directory", "use_wal"]

#: how long a writer waits for another one before "database is locked"
BUSY_TIMEOUT_MS = 5000

_E = TypeVar("_E", AsyncEngine, Engine)


def make_directory(url: str | URL) -> None:
    """The directory of a SQLite database file made if it is missing (SQLite makes the file,
    not its directory); other databases and an in-memory SQLite need nothing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def use_wal(engine: _E) -> _E:
    """Every new connection of a SQLite `engine` in WAL mode with the busy timeout; other
    databases are left as they are. (An in-memory database has no log: it stays `memory`.)"""
    if engine.dialect.name == "sqlite":
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        event.listen(sync, "connect", _pragmas)
    return engine


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()
