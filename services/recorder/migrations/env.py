"""Alembic environment of the recorder catalog.

The service runs this at start with its own connection (`catalog.migrate`); developers can also
run `alembic -c services/recorder/alembic.ini upgrade head` (or `revision --autogenerate`),
which connects to `HOTLINE_DATABASE_URL` or the recorder's SQLite file under var/.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from recorder.catalog import VERSION_TABLE, Base, open_engine  # noqa: E402

target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from recorder.settings import RecorderSettings

    return context.config.get_main_option("sqlalchemy.url") or RecorderSettings.from_env().db_url(
        "recorder"
    )


async def _run_online() -> None:
    engine = open_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()
elif (connection := context.config.attributes.get("connection")) is not None:
    _configure(connection)
else:
    asyncio.run(_run_online())
