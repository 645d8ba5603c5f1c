"""The audit trail: logins, refusals and agent state changes, for supervisors and auditors."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import AuditEntry, utcnow

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
