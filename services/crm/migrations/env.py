"""Alembic environment for the CRM database, async-engine aware.

At service start `crm.db.Database.migrate` hands in an open connection through
`config.attributes["connection"]`; from the command line
(`alembic -c services/crm/alembic.ini upgrade head`) we build an async engine from
HOTLINE_DATABASE_URL / the default SQLite file and run the same migrations through it.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from crm.models import Base  # noqa: E402

target_metadata = Base.metadata
config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from crm.settings import CrmSettings

    url = config.get_main_option("sqlalchemy.url") or CrmSettings.from_env().db_url("crm")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    from crm.settings import CrmSettings

    url = config.get_main_option("sqlalchemy.url") or CrmSettings.from_env().db_url("crm")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (given := config.attributes.get("connection")) is not None:
    _run(given)
else:
    asyncio.run(_run_with_own_engine())
