"""After-call work at the desk: the disposition form, the callback task a follow-up creates,
and the end of wrap-up.

The ACD owns the wrap-up state and its timer (the backstop when the browser is closed); the
desk counts down `HOTLINE_ACW_S` and goes Ready at zero, and submitting the form ends the
wrap-up at once by asking the ACD for Ready. One disposition per call.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from crm import audit
from crm.agent_control import AcdError, agent_json
from crm.app_keys import ACD, CDRS
from crm.auth import DB, current_user
from crm.customers import find_by_phone
from crm.desk_config import DESK
from crm.disposition import DispositionError, check
from crm.models import CallbackTask, CallDisposition, DispositionCode, User, utcnow
from crm.rest import ApiError, json_body, text_field
from crm.roles import WATCHERS, Role

#: roles that may file the wrap-up of any agent's call (others only their own).
OVERSEERS = frozenset({Role.SUPERVISOR})
_WRAP_UP = "wrap_up"


async def active_codes(request: web.Request) -> list[DispositionCode]:
    async with request.app[DB].sessions() as session:
        query = (
            select(DispositionCode)
            .where(DispositionCode.active.is_(True))
            .order_by(DispositionCode.position, DispositionCode.code)
        )
        return list(await session.scalars(query))


async def desk_config(request: web.Request) -> web.Response:
    """GET /api/desk/config: ACW length, hold reminders, reasons, codes, the user's dial class."""
    user = current_user(request)
    doc: dict[str, Any] = request.app[DESK].public(user.role)
    doc["dispositions"] = [c.public() for c in await active_codes(request)]
    return web.json_response(doc)


async def _agent_of_call(request: web.Request, user: User, call_id: str) -> str:
    """The agent the call's wrap-up belongs to; 403/404 when this user may not file it."""
    row = await request.app[CDRS].get(call_id)
    owner = row.agent_id if row is not None else ""
    if not owner and user.agent_id:
        try:  # the CDR may lag the feed: the ACD knows whose wrap-up this is
            seat = await request.app[ACD].get(user.agent_id)
            if seat.call_id == call_id:
                owner = user.agent_id
        except AcdError as exc:
            if exc.status != 404:
                raise
    if not owner:
        raise ApiError(404, f"no call {call_id} with an agent")
    if owner != user.agent_id and user.role not in OVERSEERS:
        raise ApiError(403, f"call {call_id} is not {user.agent_id or user.username}'s to wrap up")
    return owner


async def submit_disposition(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/disposition {code, notes?, follow_up?: {due_at, phone?,
    notes?}}: file the wrap-up, create the callback task, end the agent's wrap-up."""
    user = current_user(request)
    call_id = request.match_info["call_id"]
    body = await json_body(request)
    owner = await _agent_of_call(request, user, call_id)
    row = await request.app[CDRS].get(call_id)
    caller = row.ani if row is not None else ""
    codes = {c.code for c in await active_codes(request)}
    try:
        form = check(body, codes, caller, utcnow())
    except DispositionError as exc:
        raise ApiError(400, str(exc)) from None
    callback: CallbackTask | None = None
    async with request.app[DB].sessions() as session:
        if await session.get(CallDisposition, call_id) is not None:
            raise ApiError(409, f"call {call_id} already has a disposition")
        customer = None
        if form.follow_up is not None:
            customer = await find_by_phone(session, form.follow_up.phone)
        session.add(
            CallDisposition(
                call_id=call_id,
                code=form.code,
                notes=form.notes,
                agent_id=owner,
                username=user.username,
            )
        )
        if form.follow_up is not None:
            callback = CallbackTask(
                call_id=call_id,
                customer_id=customer.id if customer else None,
                phone=form.follow_up.phone,
                due_at=form.follow_up.due_at,
                notes=form.follow_up.notes or form.notes,
                agent_id=owner,
                created_by=user.username,
            )
            session.add(callback)
        detail = form.code + (" + callback" if callback else "")
        audit.record(session, user.username, "call.disposition", call_id, detail)
        try:
            await session.commit()
        except IntegrityError:
            raise ApiError(409, f"call {call_id} already has a disposition") from None
    seat = await _end_wrap_up(request, user, owner, call_id)
    return web.json_response(
        {
            "call_id": call_id,
            "code": form.code,
            "callback": callback.public() if callback else None,
            "agent": seat,
        },
        status=201,
    )


async def _end_wrap_up(
    request: web.Request, user: User, agent_id: str, call_id: str
) -> dict[str, Any] | None:
    """Ready now, if the agent is still in this call's wrap-up; their seat, or None."""
    if agent_id != user.agent_id:
        return None  # a supervisor filing for an agent leaves the agent's state alone
    control = request.app[ACD]
    try:
        seat = await control.get(agent_id)
    except AcdError:
        return None
    if agent_json(seat)["state"] != _WRAP_UP or seat.call_id != call_id:
        return agent_json(seat)
    seat = await audit.audited(
        request.app[DB],
        user.username,
        "agent.state",
        agent_id,
        "ready (disposition filed)",
        control.set_state(agent_id, "ready", ""),
    )
    return agent_json(seat)


async def list_callbacks(request: web.Request) -> web.Response:
    """GET /api/callbacks?status=open|done|all: an agent's own; watchers see everyone's."""
    user = current_user(request)
    status = request.query.get("status", "open")
    if status not in ("open", "done", "all"):
        raise ApiError(400, "query parameter status must be open, done or all")
    query = select(CallbackTask).order_by(CallbackTask.due_at).limit(500)
    if status != "all":
        query = query.where(CallbackTask.status == status)
    if user.role not in WATCHERS:
        query = query.where(CallbackTask.agent_id == (user.agent_id or ""))
    async with request.app[DB].sessions() as session:
        tasks = list(await session.scalars(query))
    return web.json_response({"callbacks": [t.public() for t in tasks]})


async def close_callback(request: web.Request) -> web.Response:
    """POST /api/callbacks/{callback_id}/done: the customer was called back (the task's agent,
    or a watcher); audited."""
    user = current_user(request)
    raw = request.match_info["callback_id"]
    if not raw.isdigit():
        raise ApiError(400, "callback id must be a number")
    async with request.app[DB].sessions() as session:
        task = await session.get(CallbackTask, int(raw))
        if task is None:
            raise ApiError(404, f"no callback {raw}")
        if user.role not in WATCHERS and task.agent_id != (user.agent_id or ""):
            raise ApiError(403, f"callback {raw} is not {user.agent_id or user.username}'s")
        if task.status == "done":
            raise ApiError(409, f"callback {raw} is already done")
        task.status = "done"
        audit.record(session, user.username, "callback.done", raw, task.phone)
        await session.commit()
        return web.json_response(task.public())


_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}")


async def list_codes(request: web.Request) -> web.Response:
    """GET /api/dispositions: every wrap-up code, active or not (admin)."""
    async with request.app[DB].sessions() as session:
        codes = await session.scalars(
            select(DispositionCode).order_by(DispositionCode.position, DispositionCode.code)
        )
        return web.json_response(
            {"dispositions": [c.public() | {"active": c.active} for c in codes]}
        )


async def put_code(request: web.Request) -> web.Response:
    """PUT /api/dispositions/{code} {"en", "zh-CN", "active"?, "position"?} (admin): add or
    change a wrap-up code; a retired code is deactivated, never deleted (old calls keep it)."""
    user = current_user(request)
    code = request.match_info["code"]
    if not _CODE.fullmatch(code):
        raise ApiError(400, "a code is 1-32 lowercase letters, digits or _ (starting a letter)")
    body = await json_body(request)
    en = text_field(body, "en", max_len=128)
    zh = text_field(body, "zh-CN", max_len=128)
    active = body.get("active", True)
    position = body.get("position", 100)
    if not isinstance(active, bool):
        raise ApiError(400, "field active must be true or false")
    if not isinstance(position, int) or isinstance(position, bool) or not 0 <= position <= 999:
        raise ApiError(400, "field position must be an integer from 0 to 999")
    assert en is not None and zh is not None
    async with request.app[DB].sessions() as session:
        row = await session.get(DispositionCode, code)
        created = row is None
        if row is None:
            row = DispositionCode(code=code)
            session.add(row)
        row.label_en, row.label_zh, row.active, row.position = en, zh, active, position
        detail = f"{en} / {zh}" + ("" if active else " (inactive)")
        audit.record(session, user.username, "disposition.code", code, detail)
        await session.commit()
        return web.json_response(
            row.public() | {"active": row.active}, status=201 if created else 200
        )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/desk/config", desk_config)
    app.router.add_post("/api/calls/{call_id}/disposition", submit_disposition)
    app.router.add_get("/api/callbacks", list_callbacks)
    app.router.add_post("/api/callbacks/{callback_id}/done", close_callback)
    app.router.add_get("/api/dispositions", list_codes)
    app.router.add_put("/api/dispositions/{code}", put_code)
