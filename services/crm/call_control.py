"""REST call control for the agent desk: hold, transfer, consult, conference, mute, keypad,
hang up and click-to-dial, each forwarded to the gateway's `CallControl` (crm.call_commands).

Only the agent on the call may act on it, or a supervisor on any call: the ACD's view of the
agent's seat says which call they are on, the CDR (which follows transfers) and the CRM's own
click-to-dial records cover what the ACD does not route. Every command is audited, refused
ones with the reason (crm.audit.audited).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

from aiohttp import web
from sqlalchemy import select

from crm import audit
from crm.agent_control import AcdError, agent_json
from crm.app_keys import ACD, CDRS, GATEWAY
from crm.auth import DB, current_user
from crm.call_commands import CONSULT_ACTIONS, TARGET_KINDS, connect_result
from crm.desk_config import DESK
from crm.dialplan import DialPlanError, dialable
from crm.models import Customer, DialOut, User
from crm.rest import ApiError, json_body, text_field
from crm.roles import Role

#: roles that may act on any agent's call (others only on their own).
OVERSEERS = frozenset({Role.SUPERVISOR})
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DIGITS = re.compile(r"[0-9*#A-Da-d]{1,32}")
_EXTENSION = re.compile(r"[0-9]{1,32}")


# -- who may act on a call ---------------------------------------------------------------------


async def _on_call(request: web.Request, user: User, call_id: str) -> bool:
    """Whether the user's agent is on `call_id`: by the ACD, the CDR, or their click-to-dial."""
    agent_id = user.agent_id
    if not agent_id:
        return False
    try:
        seat = await request.app[ACD].get(agent_id)
        if seat.call_id == call_id:
            return True
    except AcdError as exc:
        if exc.status != 404:  # not logged in: the records below may still say yes
            raise
    row = await request.app[CDRS].get(call_id)
    if row is not None:
        return row.agent_id == agent_id and row.ended_at is None
    async with request.app[DB].sessions() as session:
        dialled = await session.scalar(
            select(DialOut.id).where(DialOut.call_id == call_id, DialOut.agent_id == agent_id)
        )
    return dialled is not None


async def may_act(request: web.Request, call_id: str, action: str) -> User:
    """The user, when they may act on the call; 403 (audited) otherwise."""
    user = current_user(request)
    if user.role in OVERSEERS or await _on_call(request, user, call_id):
        return user
    async with request.app[DB].sessions() as session:
        audit.record(session, user.username, action + ".refused", call_id, "not on the call")
        await session.commit()
    who = user.agent_id or user.username
    raise ApiError(
        403, f"call {call_id} is not {who}'s: only the agent on it or a supervisor may act"
    )


async def _command(request: web.Request, action: str, detail: str, make: Any) -> tuple[User, Any]:
    """Check the caller may act, then run `make(user)` (the gateway command), audited."""
    call_id = request.match_info["call_id"]
    user = await may_act(request, call_id, action)
    call: Awaitable[Any] = make(user)
    result = await audit.audited(request.app[DB], user.username, action, call_id, detail, call)
    return user, result


def _target(body: dict[str, Any], kinds: tuple[str, ...]) -> tuple[str, str]:
    """(target_kind, target) from the body, checked: 400 naming what is wrong."""
    kind = text_field(body, "target_kind", choices=kinds)
    raw = text_field(body, "target", max_len=64)
    assert kind is not None and raw is not None
    if kind == "extension":
        if not _EXTENSION.fullmatch(raw):
            raise ApiError(400, "field target must be an extension (digits only)")
        return kind, raw
    if kind == "queue":
        if not _QUEUE_NAME.fullmatch(raw):
            raise ApiError(400, "field target must be a queue name (letters, digits, _ . -)")
        return kind, raw
    try:
        return kind, dialable(raw)
    except DialPlanError as exc:
        raise ApiError(400, f"field target: {exc}") from None


def _ring_s(request: web.Request) -> float:
    return float(request.app[DESK].ring_timeout_s)


# -- handlers ----------------------------------------------------------------------------------


async def hold(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/hold: the caller hears music, the agent's leg is held."""
    gateway = request.app[GATEWAY]
    call_id = request.match_info["call_id"]
    _, reply = await _command(request, "call.hold", "", lambda _: gateway.hold(call_id))
    return web.json_response({"call_id": call_id, "state": reply.state, "held": True})


async def resume(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/resume."""
    gateway = request.app[GATEWAY]
    call_id = request.match_info["call_id"]
    _, reply = await _command(request, "call.resume", "", lambda _: gateway.resume(call_id))
    return web.json_response({"call_id": call_id, "state": reply.state, "held": False})


async def transfer(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/transfer {kind: blind|consult, target_kind, target}.

    Blind hands the caller over (extension, queue or number); consult holds the caller and
    rings the target for the agent (extension or number), ended by /consult/{action}.
    """
    body = await json_body(request)
    kind = text_field(body, "kind", choices=("blind", "consult"))
    kinds = tuple(TARGET_KINDS) if kind == "blind" else ("extension", "number")
    target_kind, target = _target(body, kinds)
    gateway, ring = request.app[GATEWAY], _ring_s(request)
    call_id = request.match_info["call_id"]
    detail = f"{kind} to {target_kind} {target}"
    blind = kind == "blind"
    send = gateway.transfer if blind else gateway.consult
    _, reply = await _command(
        request,
        "call.transfer" if blind else "call.consult",
        detail,
        lambda u: send(call_id, target_kind, target, u.agent_id or "", ring),
    )
    leg = reply.leg_id if blind else reply.consult_leg_id
    return web.json_response(
        {
            "call_id": call_id,
            "kind": kind,
            "result": connect_result(reply.result),
            "leg_id": leg,
            "detail": reply.detail,
        }
    )


async def end_consult(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/consult/{action}: complete, cancel or swap."""
    action = request.match_info["action"]
    if action not in CONSULT_ACTIONS:
        raise ApiError(404, f"no consult action {action!r} (one of: {', '.join(CONSULT_ACTIONS)})")
    gateway = request.app[GATEWAY]
    call_id = request.match_info["call_id"]
    _, reply = await _command(
        request, f"call.consult.{action}", "", lambda _: gateway.end_consult(call_id, action)
    )
    return web.json_response({"call_id": call_id, "action": action, "state": reply.state})


async def add_party(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/conference {target_kind: extension|number, target}."""
    body = await json_body(request)
    target_kind, target = _target(body, ("extension", "number"))
    gateway, ring = request.app[GATEWAY], _ring_s(request)
    call_id = request.match_info["call_id"]
    _, reply = await _command(
        request,
        "call.conference.add",
        f"{target_kind} {target}",
        lambda u: gateway.add_party(call_id, target_kind, target, u.agent_id or "", ring),
    )
    return web.json_response(
        {
            "call_id": call_id,
            "result": connect_result(reply.result),
            "leg_id": reply.leg_id,
            "parties": reply.parties,
            "detail": reply.detail,
        }
    )


async def remove_party(request: web.Request) -> web.Response:
    """DELETE /api/calls/{call_id}/conference/{leg_id}."""
    leg_id = request.match_info["leg_id"]
    gateway = request.app[GATEWAY]
    call_id = request.match_info["call_id"]
    _, reply = await _command(
        request,
        "call.conference.remove",
        f"leg {leg_id}",
        lambda _: gateway.remove_party(call_id, leg_id),
    )
    return web.json_response({"call_id": call_id, "leg_id": leg_id, "state": reply.state})


async def mute(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/mute {muted: bool}: the agent's own microphone."""
    body = await json_body(request)
    muted = body.get("muted")
    if not isinstance(muted, bool):
        raise ApiError(400, "field muted must be true or false")
    gateway = request.app[GATEWAY]
    call_id = request.match_info["call_id"]
    _, reply = await _command(
        request,
        "call.mute" if muted else "call.unmute",
        "",
        lambda _: gateway.mute(call_id, muted),
    )
    return web.json_response({"call_id": call_id, "muted": muted, "state": reply.state})


async def digits(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/digits {digits}: DTMF towards the far party (keypad)."""
    body = await json_body(request)
    keys = text_field(body, "digits", max_len=32)
    assert keys is not None
    if not _DIGITS.fullmatch(keys):
        raise ApiError(400, "field digits may hold only 0-9, *, # and A-D")
    gateway = request.app[GATEWAY]
    call_id = request.match_info["call_id"]
    # The digits themselves are not audited: they may be a customer's PIN or card number.
    _, reply = await _command(
        request,
        "call.digits",
        f"{len(keys)} digit(s)",
        lambda _: gateway.send_digits(call_id, keys.upper()),
    )
    return web.json_response({"call_id": call_id, "sent": len(keys), "state": reply.state})


async def hangup(request: web.Request) -> web.Response:
    """POST /api/calls/{call_id}/hangup: the agent ends the call."""
    gateway = request.app[GATEWAY]
    call_id = request.match_info["call_id"]
    user, reply = await _command(
        request,
        "call.hangup",
        "",
        lambda u: gateway.hangup(call_id, "agent_hangup" if u.agent_id else "supervisor"),
    )
    return web.json_response({"call_id": call_id, "state": reply.state})


async def dial(request: web.Request) -> web.Response:
    """POST /api/dial {number, customer_id?}: click-to-dial. The agent's phone rings first,
    then the customer's number, within the dial class of the user's role."""
    user = current_user(request)
    body = await json_body(request)
    raw = text_field(body, "number", max_len=64)
    assert raw is not None
    try:
        number = dialable(raw)
    except DialPlanError as exc:
        raise ApiError(400, f"field number: {exc}") from None
    customer_id = body.get("customer_id")
    if customer_id is not None and (not isinstance(customer_id, int) or customer_id < 1):
        raise ApiError(400, "field customer_id must be a positive integer")
    if customer_id is not None:
        async with request.app[DB].sessions() as session:
            if await session.get(Customer, customer_id) is None:
                raise ApiError(404, f"no customer {customer_id}")
    endpoint = user.extension or ""
    if user.agent_id:
        try:  # the phone the agent is logged in on now (a hot desk), else their own
            endpoint = (await request.app[ACD].get(user.agent_id)).extension or endpoint
        except AcdError as exc:
            if exc.status != 404:
                raise
    if not endpoint:
        raise ApiError(409, f"user {user.username} has no extension to ring first")
    config = request.app[DESK]
    dial_class = config.dial_class(user.role)
    reply = await audit.audited(
        request.app[DB],
        user.username,
        "call.dial",
        number,
        f"from {endpoint}, class {dial_class}",
        request.app[GATEWAY].dial_out(
            user.agent_id or "",
            endpoint,
            number,
            dial_class,
            str(customer_id or ""),
            float(config.ring_timeout_s),
        ),
    )
    result = connect_result(reply.result)
    async with request.app[DB].sessions() as session:
        session.add(
            DialOut(
                call_id=reply.call_id,
                agent_id=user.agent_id or "",
                username=user.username,
                number=number,
                dial_class=dial_class,
                customer_id=customer_id,
                result=result,
            )
        )
        await session.commit()
    return web.json_response(
        {
            "call_id": reply.call_id,
            "number": number,
            "dial_class": dial_class,
            "result": result,
            "detail": reply.detail,
        }
    )


def add_routes(app: web.Application) -> None:
    """The call-control routes; each has an entry in crm.roles.POLICY."""
    app.router.add_post("/api/calls/{call_id}/hold", hold)
    app.router.add_post("/api/calls/{call_id}/resume", resume)
    app.router.add_post("/api/calls/{call_id}/transfer", transfer)
    app.router.add_post("/api/calls/{call_id}/consult/{action}", end_consult)
    app.router.add_post("/api/calls/{call_id}/conference", add_party)
    app.router.add_delete("/api/calls/{call_id}/conference/{leg_id}", remove_party)
    app.router.add_post("/api/calls/{call_id}/mute", mute)
    app.router.add_post("/api/calls/{call_id}/digits", digits)
    app.router.add_post("/api/calls/{call_id}/hangup", hangup)
    app.router.add_post("/api/dial", dial)
    app.router.add_get("/api/desk/directory", directory)


async def directory(request: web.Request) -> web.Response:
    """GET /api/desk/directory: whom a call can go to — agents with their presence (from the
    ACD) and queues — for the transfer and conference dialogs."""
    control = request.app[ACD]
    agents, queues = await control.list_agents(), await control.list_queues()
    async with request.app[DB].sessions() as session:
        rows = (await session.execute(select(User.agent_id, User.display_name))).all()
    names = {agent_id: name for agent_id, name in rows}
    return web.json_response(
        {
            "agents": [
                {
                    "agent_id": a.agent_id,
                    "display_name": names.get(a.agent_id, a.agent_id),
                    "extension": a.extension,
                    "state": agent_json(a)["state"],
                }
                for a in sorted(agents, key=lambda a: a.agent_id)
            ],
            "queues": [
                {"name": q.queue, "waiting": len(q.calls)}
                for q in sorted(queues, key=lambda q: q.queue)
            ],
        }
    )
