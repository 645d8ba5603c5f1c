"""SQLite as a service's database: the file's directory is made, in-memory databases and other
databases are left alone, and every connection is in WAL mode with the busy timeout."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from common.sqlite import BUSY_TIMEOUT_MS, make_directory, use_wal


def test_the_directory_of_a_sqlite_file_is_made(tmp_path: Path) -> None:
    make_directory(f"sqlite+aiosqlite:///{tmp_path}/var/crm/hotline.db")
    make_directory(f"sqlite:///{tmp_path}/var/recorder/catalog.db?timeout=5")
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["crm", "recorder"]
    assert not list((tmp_path / "var" / "crm").iterdir())  # the file is SQLite's to make
    make_directory(f"sqlite:///{tmp_path}/var/crm/hotline.db")  # already there: fine


def test_other_databases_and_memory_need_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in (
        "sqlite+aiosqlite://",
        "sqlite:///:memory:",
        "postgresql+asyncpg://hotline@127.0.0.1/pg/dir",
    ):
        make_directory(url)
    assert not list(tmp_path.iterdir())


def test_every_connection_has_a_write_ahead_log_and_waits_for_a_writer(tmp_path: Path) -> None:
    engine = use_wal(create_engine(f"sqlite:///{tmp_path}/wal.db"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == BUSY_TIMEOUT_MS
    finally:
        engine.dispose()
