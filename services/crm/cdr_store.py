"""CDR rows in the database: upsert from events and the queries the desktop needs."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BindParameter,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from common.events import Envelope
from crm.cdr import COLUMNS, CdrRecord, call_id_of, end_acw, fold, leaves_wrap_up
from crm.db import Database
from crm.metrics import CDRS_WRITTEN
from crm.models import CallDisposition, Cdr

#: an insert can only lose a race to one other writer of the same call; then we update theirs.
_ATTEMPTS = 3
#: ends of wrap-up looked up per SELECT: SQLite allows 500 terms in a compound SELECT and
#: 32,766 parameters, and repeats the batch's call ids (at most 500) for each end
_LEAVES_PER_LOAD = 50

_CDRS = cast(Table, Cdr.__table__)
#: what folding reads of a row (not `updated_at`)
_SELECT = select(_CDRS.c.call_id, *(_CDRS.c[name] for name in COLUMNS))
#: every column of a changed row; `updated_at` from the column's own onupdate
_UPDATE = update(_CDRS).where(_CDRS.c.call_id == bindparam("key"))
_INSERT = insert(_CDRS)


class CdrStore:
    """Applies call events to CDR rows; safe with several CRM replicas on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def apply(self, env: Envelope) -> bool:
        """Fold the envelope into its call's row (created on first sight); True if written.
        A batch of one: the same transaction, insert race and end-of-wrap-up rules."""
        return await self.apply_batch([env]) > 0

    async def apply_batch(self, envs: Sequence[Envelope]) -> int:
        """Fold several envelopes, in order, in one transaction; returns how many of them
        changed a row (what `apply` one by one would have returned True for).

        One SELECT loads and locks (FOR UPDATE on PostgreSQL, in call id order) the rows of
        every call named and every row an end of wrap-up in the batch could close; they are
        folded in memory and written by one UPDATE and one INSERT (each of many rows) and one
        commit: the same rows as `apply` per envelope, for four round trips per batch instead
        of several per event. Plain statements rather than the ORM's unit of work, which cost
        more CPU than the folding itself. An insert that loses the race to another replica
        rolls the whole batch back and folds it again onto their row.
        """
        call_ids = sorted({c for env in envs if (c := call_id_of(env)) is not None})
        leaves = [env for env in envs if leaves_wrap_up(env)]
        if not call_ids and not leaves:
            return 0
        for attempt in range(_ATTEMPTS):
            async with self.db.engine.connect() as conn:
                records = {
                    c: CdrRecord.from_row(row, copy=False)
                    for c, row in (await self._load(conn, call_ids, leaves)).items()
                }
                stored = set(records)
                changed: set[str] = set()
                writes = 0
                for env in envs:
                    if leaves_wrap_up(env):
                        call_id = _open_acw(records, env.agent_state_changed.agent_id, _at(env))
                        if call_id is None or not end_acw(records[call_id], _at(env)):
                            continue
                    else:
                        call_id = call_id_of(env)
                        if call_id is None:
                            continue
                        record = records.setdefault(call_id, CdrRecord(call_id))
                        if not fold(record, env):
                            continue
                    changed.add(call_id)
                    writes += 1
                if not changed:
                    return 0
                updates = [records[c].values() for c in sorted(changed & stored)]
                inserts = [records[c].values() for c in sorted(changed - stored)]
                try:
                    if updates:
                        await conn.execute(_UPDATE, [_keyed(v) for v in updates])
                    if inserts:
                        await conn.execute(_INSERT, inserts)
                    await conn.commit()
                except IntegrityError:
                    if attempt == _ATTEMPTS - 1:
                        raise
                    continue
            CDRS_WRITTEN.inc(writes)
            return writes
        return 0

    async def _load(
        self, conn: AsyncConnection, call_ids: Sequence[str], leaves: Sequence[Envelope]
    ) -> dict[str, Row[Any]]:
        """The rows of these calls that exist and the rows the ends of wrap-up in `leaves`
        could close (see `_load_query`), locked in call id order until the commit; one
        SELECT, or one per _LEAVES_PER_LOAD ends of wrap-up."""
        if not call_ids and not leaves:
            return {}
        nth: Counter[str] = Counter()
        ends = []
        for env in leaves:
            agent_id = env.agent_state_changed.agent_id
            nth[agent_id] += 1
            ends.append((agent_id, _at(env), nth[agent_id]))
        rows: dict[str, Row[Any]] = {}
        ids = _padded(list(call_ids), call_ids[-1]) if call_ids else []
        for first in range(0, max(len(ends), 1), _LEAVES_PER_LOAD):
            chunk = _padded(ends[first : first + _LEAVES_PER_LOAD], _NO_END, _LEAVES_PER_LOAD)
            params: dict[str, Any] = {"ids": ids}
            for n, (agent_id, at, agents_nth) in enumerate(chunk):
                params[f"agent_{n}"] = agent_id
                params[f"at_{n}"] = at
                params[f"nth_{n}"] = agents_nth
            query = _load_query(bool(call_ids), len(chunk))
            rows.update((row.call_id, row) for row in await conn.execute(query, params))
        return rows

    async def get(self, call_id: str) -> Cdr | None:
        async with self.db.sessions() as session:
            return await session.get(Cdr, call_id)

    async def agent_of(self, call_id: str) -> str:
        """The agent the CDR credits with the call, "" when none (yet)."""
        async with self.db.sessions() as session:
            return await session.scalar(select(Cdr.agent_id).where(Cdr.call_id == call_id)) or ""

    async def recent(self, limit: int, agent_id: str | None = None) -> list[Cdr]:
        """Newest calls first, optionally only one agent's."""
        query = select(Cdr).order_by(Cdr.started_at.desc(), Cdr.call_id).limit(limit)
        if agent_id is not None:
            query = query.where(Cdr.agent_id == agent_id)
        async with self.db.sessions() as session:
            return list(await session.scalars(query))

    async def of_numbers(self, numbers: list[str], call_ids: list[str], limit: int) -> list[Cdr]:
        """Every call from these numbers (normal form) or with these ids, newest first."""
        conditions = []
        if numbers:
            conditions.append(Cdr.caller_number.in_(numbers))
        if call_ids:
            conditions.append(Cdr.call_id.in_(call_ids))
        if not conditions:
            return []
        query = select(Cdr).where(or_(*conditions)).order_by(Cdr.started_at.desc()).limit(limit)
        async with self.db.sessions() as session:
            return list(await session.scalars(query))

    async def dispositions(self, call_ids: list[str]) -> dict[str, CallDisposition]:
        """The wrap-up forms of these calls, by call id."""
        if not call_ids:
            return {}
        query = select(CallDisposition).where(CallDisposition.call_id.in_(call_ids))
        async with self.db.sessions() as session:
            return {d.call_id: d for d in await session.scalars(query)}


def _at(env: Envelope) -> datetime:
    return env.occurred_at.ToDatetime(tzinfo=UTC)


def _open_acw(records: dict[str, CdrRecord], agent_id: str, at: datetime) -> str | None:
    """The call whose ACW an agent leaving wrap-up at `at` ends: the agent's latest call still
    in wrap-up that began by then (the event names no call; the agents topic is keyed by
    agent, so it arrives after the wrap-up it ends). Every call that can be is in `records`
    (the batch's calls as folded so far, and the candidates `_load` found), as it now stands."""
    best: tuple[datetime, str] | None = None
    for call_id, record in records.items():
        started = record.acw_started_at
        if (
            record.agent_id == agent_id
            and started is not None
            and record.acw_ended_at is None
            and started <= at
            and (best is None or started > best[0])
        ):
            best = (started, call_id)
    return best[1] if best is not None else None


#: an end of wrap-up that closes nothing (no agent, before any call, LIMIT 0): `_load`'s padding
_NO_END = ("", datetime(1970, 1, 1, tzinfo=UTC), 0)

_T = TypeVar("_T")


def _padded(items: list[_T], filler: _T, limit: int = 0) -> list[_T]:
    """`items` made up to the next power of two (or `limit`) with `filler`: the load statement
    has a shape per number of ids and of ends of wrap-up, and every shape is prepared and kept
    by the database driver (SQLite's cache holds 128 per connection, asyncpg's 100); a few
    sizes instead of every size keeps that cache small and warm. A repeated id or an end that
    matches nothing changes no result."""
    n = len(items)
    if n <= 1:
        return items
    size = 1 << (n - 1).bit_length()
    if limit:
        size = min(size, limit)
    return items + [filler] * (size - n)


@functools.lru_cache(maxsize=64)
def _load_query(with_ids: bool, leaves: int) -> Select[Any]:
    """`_load`'s statement (built once per shape, then only its parameters change): the rows
    of the calls `ids` and, for each end of wrap-up n in the batch (agent_n leaving at at_n,
    the agent's nth_n end in it), the calls it may close. Those are the agent's nth_n latest
    calls still in wrap-up that began by at_n, other than the batch's own: the one it closes
    is the latest still open when it comes, and at most nth_n - 1 of them were closed before
    it, each by one of that agent's earlier ends."""
    # `ids` is left out rather than ever empty: one empty expanding parameter in both an IN
    # and a NOT IN is rendered as the same empty set, false in both, on PostgreSQL
    ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    wanted = [select(_CDRS.c.call_id).where(_CDRS.c.call_id.in_(ids))] if with_ids else []
    open_acw = and_(_CDRS.c.acw_started_at.is_not(None), _CDRS.c.acw_ended_at.is_(None))
    for n in range(leaves):
        part = (
            select(_CDRS.c.call_id)
            .where(
                _CDRS.c.agent_id == bindparam(f"agent_{n}"),
                open_acw,
                _CDRS.c.acw_started_at <= bindparam(f"at_{n}", type_=_CDRS.c.acw_started_at.type),
            )
            .order_by(_CDRS.c.acw_started_at.desc(), _CDRS.c.call_id.desc())
            .limit(bindparam(f"nth_{n}"))
        )
        if with_ids:
            part = part.where(_CDRS.c.call_id.not_in(ids))
        wanted.append(select(part.subquery().c.call_id))  # a LIMIT in UNION ALL needs its own
    # one IN (… UNION ALL …), never an OR of two: PostgreSQL looks each id up by the key
    # instead of scanning the table to test the OR on every row
    query = _SELECT.where(_CDRS.c.call_id.in_(union_all(*wanted)))
    if leaves:  # checked again on a row another replica changed meanwhile
        query = query.where(or_(_CDRS.c.call_id.in_(ids), open_acw) if with_ids else open_acw)
    return query.order_by(_CDRS.c.call_id).with_for_update()


def _keyed(values: dict[str, Any]) -> dict[str, Any]:
    """UPDATE parameters: the row's key under the WHERE clause's own name."""
    values["key"] = values.pop("call_id")
    return values


def to_json(row: Cdr, disposition: CallDisposition | None = None) -> dict[str, Any]:
    """A CDR as the REST API shows it: ISO-8601 UTC times, no internal claim bookkeeping,
    the call's wrap-up (disposition) when one was submitted."""
    doc: dict[str, Any] = {"call_id": row.call_id}
    for name in COLUMNS:
        if name == "facts":
            continue
        value = getattr(row, name)
        doc[name] = _iso(value) if isinstance(value, datetime) else value
    doc["disposition"] = disposition.public() if disposition else None
    return doc


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
