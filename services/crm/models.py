"""The CRM's tables as SQLAlchemy 2 models; the Alembic migrations create exactly these.

Times are stored as UTC; SQLite keeps no zone, so `UtcDateTime` hands back aware datetimes
on every backend and code never mixes naive and aware values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.dbtypes import UtcDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    """A person who logs in; agents and team leaders also have an ACD agent id and extension."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    extension: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    def public(self) -> dict[str, Any]:
        """What the browser may see about a user (never the hash)."""
        return {
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
            "agent_id": self.agent_id,
            "extension": self.extension,
        }


class Customer(Base):
    """A caller we know; `phone` holds the normalised number (see crm.phone)."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    phone: Mapped[str] = mapped_column(String(32), index=True)
    email: Mapped[str] = mapped_column(String(255), default="")
    vip_tier: Mapped[int] = mapped_column(Integer, default=0)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "phone": self.phone,
            "email": self.email,
            "vip_tier": self.vip_tier,
            "notes": self.notes,
        }


class Cdr(Base):
    """One call detail record, folded from the call's events (see crm.cdr).

    `facts` remembers which event set each order-sensitive field, so an event arriving late
    on another topic never overwrites a newer fact.
    """

    __tablename__ = "cdrs"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    ani: Mapped[str] = mapped_column(String(128), default="")
    dnis: Mapped[str] = mapped_column(String(128), default="")
    trunk: Mapped[str] = mapped_column(String(64), default="")
    channel: Mapped[str] = mapped_column(String(16), default="")
    queue: Mapped[str] = mapped_column(String(64), default="", index=True)
    agent_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    extension: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    offered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    wait_ms: Mapped[int | None] = mapped_column(BigInteger)
    talk_ms: Mapped[int | None] = mapped_column(BigInteger)
    end_reason: Mapped[str] = mapped_column(String(32), default="")
    abandoned: Mapped[bool] = mapped_column(Boolean, default=False)
    recording_id: Mapped[str] = mapped_column(String(128), default="")
    recording_path: Mapped[str] = mapped_column(String(512), default="")
    recording_status: Mapped[str] = mapped_column(String(16), default="")
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """Who did what to what, for logins, state changes and anything an auditor asks about."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class HotDesk(Base):
    """An extension an admin approved as a hot desk: any agent may log in on it."""

    __tablename__ = "hot_desks"

    extension: Mapped[str] = mapped_column(String(32), primary_key=True)
    approved_by: Mapped[str] = mapped_column(String(64))
    approved_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    note: Mapped[str] = mapped_column(String(256), default="")

    def public(self) -> dict[str, Any]:
        return {
            "extension": self.extension,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at.isoformat(timespec="seconds"),
            "note": self.note,
        }


class Session(Base):
    """A web login; only the SHA-256 of the bearer token is stored, never the token."""

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
