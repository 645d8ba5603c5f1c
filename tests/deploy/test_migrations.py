"""The migration hook Job's commands, exactly as rendered, run against the machine's PostgreSQL:
each service's Alembic brings its own database to head, and a second run changes nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest

from tests.deploy.chart import CHART, ROOT, one, render, values_of

PG_DSN = os.environ.get("HOTLINE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def tables(database: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN.rsplit("/", 1)[0] + "/" + database, timeout=3)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


def test_the_migration_job_migrates_both_databases() -> None:
    names = {svc: f"hotline_{svc}_job_{uuid.uuid4().hex[:10]}" for svc in ("crm", "recorder")}
    try:
        for name in names.values():
            asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError) as exc:
        pytest.fail(f"PostgreSQL unreachable at {PG_DSN} (make test starts it): {exc!r}")
    base = "postgresql+asyncpg://" + PG_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    values = values_of(CHART / "ci" / "default-values.yaml")
    values["database"] = {svc: {"url": f"{base}/{name}"} for svc, name in names.items()}
    docs = render(values)
    secret = one(docs, "Secret", "-database")["stringData"]
    job = one(docs, "Job", "-migrations")["spec"]["template"]["spec"]
    try:
        for _ in range(2):  # upgrade head is idempotent
            for container in job["initContainers"] + job["containers"]:
                ref = container["env"][0]["valueFrom"]["secretKeyRef"]
                env = {
                    **os.environ,
                    container["env"][0]["name"]: secret[ref["key"]],
                    "PYTHONPATH": f"{ROOT / 'services'}:{ROOT / 'services/common/generated'}",
                }
                argv = [
                    sys.executable
                    if a == "/opt/hotline/venv/bin/python"
                    else a.replace("/opt/hotline/", f"{ROOT}/")
                    for a in container["command"]
                ]
                proc = subprocess.run(
                    argv,
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert proc.returncode == 0, proc.stdout + proc.stderr
        crm, recorder = asyncio.run(tables(names["crm"])), asyncio.run(tables(names["recorder"]))
        assert "alembic_version" in crm and "users" in crm and "cdrs" in crm, crm
        assert "recordings" in recorder and not (recorder & {"users", "cdrs"}), recorder
    finally:
        for name in names.values():
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
