"""The REST API of the agent desktop: who am I, my seat in the ACD, customers and CDRs; the
call control, wrap-up, history and screen lock routes of their own modules are added here.

Access per route is in `crm.roles.POLICY` (enforced by `crm.auth.access_control`); handlers
only narrow further what a role may *see* (an agent sees only their own calls).
"""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web
from sqlalchemy import select

from crm import (
    audit,
    auth,
    call_control,
    history,
    hotdesks,
    recordings,
    screen_lock,
    wrapup,
)
from crm.agent_control import REQUESTABLE_STATES, agent_json
from crm.app_keys import ACD, CDRS
from crm.auth import COOKIE, DB, current_user, end_session
from crm.cdr_store import to_json
from crm.customers import find_by_phone
from crm.desk import HUB
from crm.desk_config import DESK
from crm.models import HotDesk, User
from crm.rest import ApiError, json_body, text_field
from crm.roles import ALL_CDR_READERS
from crm.supervision import add_routes as add_supervision_routes
from hotline.v1 import acd_pb2

__all__ = ["ACD", "CDRS", "add_routes"]

DEFAULT_CDR_LIMIT = 50
MAX_CDR_LIMIT = 500


async def logout(request: web.Request) -> web.Response:
    """POST /api/logout: end the session and close its live feed."""
    hashed = await end_session(request)
    if hashed:
        await request.app[HUB].end_session(hashed)
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


# -- the agent's seat in the ACD -----------------------------------------------------------


def _agent_id(user: User) -> str:
    if not user.agent_id:
        raise ApiError(409, f"user {user.username} has no agent id; ask an admin to assign one")
    return user.agent_id


async def _audited(
    request: web.Request, action: str, target: str, detail: str, call: Awaitable[acd_pb2.Agent]
) -> web.Response:
    """Run an ACD command and audit it, whether the ACD accepted it or not."""
    user = current_user(request)
    agent = await audit.audited(request.app[DB], user.username, action, target, detail, call)
    return web.json_response(agent_json(agent))


async def agent_status(request: web.Request) -> web.Response:
    """GET /api/agent: the agent's seat as the ACD sees it (404 before the first login)."""
    agent_id = _agent_id(current_user(request))
    return web.json_response(agent_json(await request.app[ACD].get(agent_id)))


async def agent_login(request: web.Request) -> web.Response:
    """POST /api/agent/login {"extension"?}: log the user's agent in to the ACD."""
    user = current_user(request)
    agent_id = _agent_id(user)
    body = await json_body(request, optional=True)
    extension = text_field(body, "extension", required=False, max_len=32) or user.extension
    if not extension:
        raise ApiError(400, "missing field: extension (the user has no default extension)")
    if not extension.isdigit():
        raise ApiError(400, "field extension must contain digits only")
    async with request.app[DB].sessions() as session:
        allowed = await hotdesks.may_use(session, user, extension)
        if not allowed:
            audit.record(
                session, user.username, "agent.login.refused", agent_id, f"extension {extension}"
            )
            await session.commit()
    if not allowed:
        raise ApiError(
            403,
            f"extension {extension} is not {user.username}'s and not an approved hot desk "
            f"(their own is {user.extension or 'not set'}; an admin approves hot desks)",
        )
    control = request.app[ACD]
    return await _audited(
        request,
        "agent.login",
        agent_id,
        f"extension {extension}",
        control.login(agent_id, extension),
    )


async def agent_state(request: web.Request) -> web.Response:
    """POST /api/agent/state {"state": "ready"|"not_ready", "reason"?}."""
    agent_id = _agent_id(current_user(request))
    body = await json_body(request)
    state = text_field(body, "state", choices=tuple(REQUESTABLE_STATES))
    reasons = request.app[DESK].not_ready_reasons
    reason = text_field(body, "reason", required=False, choices=reasons) or ""
    assert state is not None
    if reason and state != "not_ready":
        raise ApiError(400, "field reason is only allowed with state not_ready")
    control = request.app[ACD]
    detail = f"{state} ({reason})" if reason else state
    return await _audited(
        request, "agent.state", agent_id, detail, control.set_state(agent_id, state, reason)
    )


async def agent_logout(request: web.Request) -> web.Response:
    """POST /api/agent/logout: take the agent out of the ACD (no more offers)."""
    agent_id = _agent_id(current_user(request))
    control = request.app[ACD]
    return await _audited(request, "agent.logout", agent_id, "", control.logout(agent_id))


# -- customers and calls -------------------------------------------------------------------


async def customer_by_phone(request: web.Request) -> web.Response:
    """GET /api/customers?phone=…: the customer behind a number (any common notation)."""
    phone = request.query.get("phone", "").strip()
    if not phone:
        raise ApiError(400, "missing query parameter: phone")
    async with request.app[DB].sessions() as session:
        customer = await find_by_phone(session, phone)
    if customer is None:
        raise ApiError(404, f"no customer with phone {phone}")
    return web.json_response(customer.public())


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_CDR_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_CDR_LIMIT:
        raise ApiError(400, f"query parameter limit must be an integer from 1 to {MAX_CDR_LIMIT}")
    return limit


async def list_cdrs(request: web.Request) -> web.Response:
    """GET /api/cdrs?limit=&agent=: newest calls first; an agent sees only their own."""
    user = current_user(request)
    limit = _limit(request)
    wanted = request.query.get("agent") or None
    if user.role not in ALL_CDR_READERS:
        own = user.agent_id or ""
        if wanted is not None and wanted != own:
            raise ApiError(403, f"role {user.role} may only list its own calls")
        wanted = own
    store = request.app[CDRS]
    rows = await store.recent(limit, wanted)
    dispositions = await store.dispositions([row.call_id for row in rows])
    return web.json_response(
        {"cdrs": [to_json(row, dispositions.get(row.call_id)) for row in rows]}
    )


async def get_cdr(request: web.Request) -> web.Response:
    """GET /api/cdrs/{call_id}: one call; another agent's call is "not found" to an agent."""
    user = current_user(request)
    call_id = request.match_info["call_id"]
    row = await request.app[CDRS].get(call_id)
    visible = row is not None and (
        user.role in ALL_CDR_READERS or (user.agent_id and row.agent_id == user.agent_id)
    )
    if not visible:
        raise ApiError(404, f"no call {call_id}")
    assert row is not None
    disposition = (await request.app[CDRS].dispositions([call_id])).get(call_id)
    return web.json_response(to_json(row, disposition))


# -- hot desks -----------------------------------------------------------------------------


async def list_hot_desks(request: web.Request) -> web.Response:
    """GET /api/hotdesks: extensions any agent may log in on."""
    async with request.app[DB].sessions() as session:
        desks = (await session.scalars(select(HotDesk).order_by(HotDesk.extension))).all()
    return web.json_response({"hotdesks": [d.public() for d in desks]})


async def approve_hot_desk(request: web.Request) -> web.Response:
    """POST /api/hotdesks {"extension", "note"?} (admin): approve an extension as a hot desk."""
    user = current_user(request)
    body = await json_body(request)
    extension = text_field(body, "extension", max_len=32)
    note = text_field(body, "note", required=False, max_len=256) or ""
    assert extension is not None
    if not extension.isdigit():
        raise ApiError(400, "field extension must contain digits only")
    async with request.app[DB].sessions() as session:
        owner = await hotdesks.owner_of(session, extension)
        if owner is not None:
            raise ApiError(409, f"extension {extension} is {owner.username}'s own extension")
        if await hotdesks.is_hot_desk(session, extension):
            raise ApiError(409, f"extension {extension} is already a hot desk")
        desk = await hotdesks.approve(session, extension, user.username, note)
        audit.record(session, user.username, "hotdesk.approve", extension, note)
        await session.commit()
        return web.json_response(desk.public(), status=201)


async def withdraw_hot_desk(request: web.Request) -> web.Response:
    """DELETE /api/hotdesks/{extension} (admin)."""
    user = current_user(request)
    extension = request.match_info["extension"]
    async with request.app[DB].sessions() as session:
        if not await hotdesks.withdraw(session, extension):
            raise ApiError(404, f"extension {extension} is not a hot desk")
        audit.record(session, user.username, "hotdesk.withdraw", extension, "")
        await session.commit()
    return web.json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    """Every REST route; each must have an entry in crm.roles.POLICY."""
    app.router.add_post("/api/login", auth.login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/agent", agent_status)
    app.router.add_post("/api/agent/login", agent_login)
    app.router.add_post("/api/agent/state", agent_state)
    app.router.add_post("/api/agent/logout", agent_logout)
    app.router.add_get("/api/customers", customer_by_phone)
    app.router.add_get("/api/cdrs", list_cdrs)
    app.router.add_get("/api/cdrs/{call_id}", get_cdr)
    app.router.add_get("/api/hotdesks", list_hot_desks)
    app.router.add_post("/api/hotdesks", approve_hot_desk)
    app.router.add_delete("/api/hotdesks/{extension}", withdraw_hot_desk)
    screen_lock.add_routes(app)
    call_control.add_routes(app)
    wrapup.add_routes(app)
    history.add_routes(app)
    recordings.add_routes(app)
    add_supervision_routes(app)
