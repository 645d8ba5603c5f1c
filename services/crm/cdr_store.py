"""CDR rows in the database: upsert from events and the queries the desktop needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from common.events import Envelope
from crm.cdr import COLUMNS, CdrRecord, call_id_of, fold
from crm.db import Database
from crm.metrics import CDRS_WRITTEN
from crm.models import Cdr

#: an insert can only lose a race to one other writer of the same call; then we update theirs.
_ATTEMPTS = 3


class CdrStore:
    """Applies call events to CDR rows; safe with several CRM replicas on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def apply(self, env: Envelope) -> bool:
        """Fold the envelope into its call's row (created on first sight); True if written."""
        call_id = call_id_of(env)
        if call_id is None:
            return False
        for attempt in range(_ATTEMPTS):
            async with self.db.sessions() as session:
                row = await session.get(Cdr, call_id, with_for_update=True)
                record = CdrRecord.from_row(row) if row is not None else CdrRecord(call_id)
                if not fold(record, env):
                    return False
                if row is None:
                    row = Cdr(call_id=call_id)
                    session.add(row)
                record.to_row(row)
                try:
                    await session.commit()
                except IntegrityError:
                    if attempt == _ATTEMPTS - 1:
                        raise
                    continue
            CDRS_WRITTEN.inc()
            return True
        return False

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


def to_json(row: Cdr) -> dict[str, Any]:
    """A CDR as the REST API shows it: ISO-8601 UTC times, no internal claim bookkeeping."""
    doc: dict[str, Any] = {"call_id": row.call_id}
    for name in COLUMNS:
        if name == "facts":
            continue
        value = getattr(row, name)
        doc[name] = _iso(value) if isinstance(value, datetime) else value
    return doc


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
