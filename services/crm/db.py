"""The CRM database: engine, sessions, migrations at start and a liveness probe for /readyz.

The same code runs on SQLite (laptop) and PostgreSQL (Kubernetes); only the URL differs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from common.dbmetrics import instrument
from common.health import Readiness
from common.sqlite import make_directory, use_wal

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: any constant works; it only has to be the same for every CRM replica.
_STARTUP_LOCK_ID = 0x484F544C  # "HOTL"


def alembic_config() -> Config:
    """Alembic configuration pointing at the CRM's migration scripts (no ini file needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


class Database:
    """Owns the async engine and hands out sessions (on SQLite in WAL mode: common.sqlite)."""

    def __init__(self, url: str) -> None:
        self.url = url
        make_directory(url)
        self.engine: AsyncEngine = use_wal(instrument(create_async_engine(url, pool_pre_ping=True)))
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (`alembic upgrade head`)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade_head)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Run start-up work (migrate, seed) in one replica at a time.

        On PostgreSQL a session advisory lock serialises replicas starting together; a
        SQLite file belongs to one process, so there is nothing to serialise.
        """
        if self.dialect != "postgresql":
            yield
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _STARTUP_LOCK_ID})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _STARTUP_LOCK_ID})
                await conn.commit()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _upgrade_head(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def describe(url: str) -> str:
    """The URL without its password, for logs and /readyz."""
    return make_url(url).render_as_string(hide_password=True)


async def watch(db: Database, readiness: Readiness, every_s: float = 10.0) -> None:
    """Keep the "database" readiness check current until cancelled."""
    where = describe(db.url)
    while True:
        await asyncio.sleep(every_s)
        try:
            await db.ping()
        except (SQLAlchemyError, OSError) as exc:
            readiness.set("database", False, f"{where}: {exc!r}")
        else:
            readiness.set("database", True, where)
