"""The audit trail: logins, refusals, agent state changes and call commands, for supervisors
and auditors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import Database
from crm.models import AuditEntry, utcnow
from crm.rest import ApiError

T = TypeVar("T")

log = logging.getLogger(__name__)


def record(
    session: AsyncSession, actor: str, action: str, target: str = "", detail: str = ""
) -> None:
    """Add an audit entry to the session (committed with the caller's unit of work)."""
    session.add(AuditEntry(ts=utcnow(), actor=actor, action=action, target=target, detail=detail))
    log.info(
        "audit %s %s %s",
        actor,
        action,
        target,
        extra={"audit_action": action, "actor": actor, "target": target},
    )


async def audited(
    db: Database, actor: str, action: str, target: str, detail: str, call: Awaitable[T]
) -> T:
    """Run a command for `actor` and audit it whether it succeeded or not: `action`, or
    `action.refused` with the reason when the peer (or a check) said no."""
    try:
        result = await call
    except ApiError as exc:
        code = getattr(exc, "code", None)
        why = f"{code.name}: {exc.message}" if code is not None else f"{exc.status}: {exc.message}"
        async with db.sessions() as session:
            record(session, actor, action + ".refused", target, f"{detail}; {why}".lstrip("; "))
            await session.commit()
        raise
    async with db.sessions() as session:
        record(session, actor, action, target, detail)
        await session.commit()
    return result
