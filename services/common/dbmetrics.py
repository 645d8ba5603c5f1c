"""Database latency as a metric: every statement a service's engine runs is timed.

`hotline_db_query_seconds` (a histogram; the job label says which service) is what the
platform dashboard's "Database latency" panel and an SRE chasing a slow CDR write look at.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from prometheus_client import Histogram
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["instrument"]

QUERY = Histogram(
    "hotline_db_query_seconds",
    "Time the database took to run a statement",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
_OPERATIONS = frozenset({"select", "insert", "update", "delete"})
_STARTED = "hotline_query_started"
_E = TypeVar("_E", AsyncEngine, Engine)


def _operation(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else ""
    return word if word in _OPERATIONS else "other"


def instrument(engine: _E) -> _E:
    """Time every statement of `engine` (an async engine: its sync engine's cursor events)."""

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault(_STARTED, []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.get(_STARTED)
        if started:
            QUERY.labels(_operation(statement)).observe(time.perf_counter() - started.pop())

    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    event.listen(sync, "before_cursor_execute", before)
    event.listen(sync, "after_cursor_execute", after)
    return engine
