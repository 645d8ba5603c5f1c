"""The CRM's tables as SQLAlchemy 2 models; the Alembic migrations create exactly these.

Times are stored as UTC; SQLite keeps no zone, so `UtcDateTime` hands back aware datetimes
on every backend and code never mixes naive and aware values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, text
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
    #: the desk's language ("zh-CN", "en"), "" to follow the browser
    language: Mapped[str] = mapped_column(String(8), default="")

    def public(self) -> dict[str, Any]:
        """What the browser may see about a user (never the hash)."""
        return {
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
            "agent_id": self.agent_id,
            "extension": self.extension,
            "language": self.language,
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


_OPEN_ACW = "acw_ended_at IS NULL AND acw_started_at IS NOT NULL"


class Cdr(Base):
    """One call detail record, folded from the call's events (see crm.cdr).

    `facts` remembers which event set each order-sensitive field, so an event arriving late
    on another topic never overwrites a newer fact.
    """

    __tablename__ = "cdrs"
    __table_args__ = (
        # the calls still in after-call work, which an agent leaving wrap-up looks among
        Index(
            "ix_cdrs_open_acw",
            "agent_id",
            "acw_started_at",
            postgresql_where=text(_OPEN_ACW),
            sqlite_where=text(_OPEN_ACW),
        ),
    )

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
    #: the caller's number in the customers' normal form (crm.phone), for contact history
    caller_number: Mapped[str] = mapped_column(String(32), default="", index=True)
    hold_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    hold_count: Mapped[int] = mapped_column(Integer, default=0)
    acw_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    acw_ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    acw_ms: Mapped[int | None] = mapped_column(BigInteger)
    #: talk + hold + after-call work
    handle_ms: Mapped[int | None] = mapped_column(BigInteger)
    #: [{at, kind, target_kind, target, from_agent_id, to_agent_id}] in order
    transfers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: [{leg_id, party, joined_at, left_at}] every party that joined a conference
    conference: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: [{recording_id, path, status, at}] every recording of the call
    recordings: Mapped[list[Any]] = mapped_column(JSON, default=list)
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
    #: set while the desk's screen is locked: the API answers 423 until the password is given
    locked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DispositionCode(Base):
    """A wrap-up code the agent picks for a call (configurable; seeded with common ones)."""

    __tablename__ = "disposition_codes"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    label_en: Mapped[str] = mapped_column(String(128))
    label_zh: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    def public(self) -> dict[str, Any]:
        return {"code": self.code, "en": self.label_en, "zh-CN": self.label_zh}


class CallDisposition(Base):
    """How a call ended for the business: the agent's wrap-up form, one per call."""

    __tablename__ = "dispositions"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    code: Mapped[str] = mapped_column(String(32))
    notes: Mapped[str] = mapped_column(Text, default="")
    agent_id: Mapped[str] = mapped_column(String(64), default="")
    username: Mapped[str] = mapped_column(String(64))
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    def public(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "notes": self.notes,
            "agent_id": self.agent_id,
            "username": self.username,
            "submitted_at": self.submitted_at.isoformat(timespec="seconds"),
        }


class CallbackTask(Base):
    """A promise to call a customer back, made in a call's wrap-up ("needs follow-up")."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(128), index=True)
    customer_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    phone: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    agent_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="open")

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "customer_id": self.customer_id,
            "phone": self.phone,
            "due_at": self.due_at.isoformat(timespec="seconds"),
            "notes": self.notes,
            "agent_id": self.agent_id,
            "created_by": self.created_by,
            "status": self.status,
        }


class DialOut(Base):
    """A click-to-dial the CRM placed: who dialled whom, and the call it became."""

    __tablename__ = "dial_outs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    agent_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    username: Mapped[str] = mapped_column(String(64))
    number: Mapped[str] = mapped_column(String(32), index=True)
    dial_class: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[str] = mapped_column(String(32), default="")
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
