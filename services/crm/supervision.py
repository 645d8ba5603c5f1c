"""The supervisor's board and actions (REST): the board's snapshot, and what a supervisor may do
to other agents and their calls — listen, whisper, barge (switchable, stoppable), force release,
change an agent's state (Not Ready with a reason, Ready, log out).

The ACD owns agent states and the gateway owns calls: these handlers only forward over gRPC
(`Acd.SetState`/`Logout`, `CallControl.Monitor`/`StopMonitor`/`Hangup`) and turn refusals into
HTTP statuses with the service's message. Access is in `crm.roles.POLICY` (the board for
watchers, actions for supervisors and admins only); every action is in the audit log, accepted
or refused, with who did it to whom.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from crm import audit, hotdesks
from crm.agent_control import REQUESTABLE_STATES, AgentControl, agent_json
from crm.auth import DB, current_user
from crm.board import board_agent, board_queue
from crm.call_commands import MONITOR_MODES, CallCommands, connect_result
from crm.rest import ApiError, json_body, text_field
from hotline.v1 import gateway_pb2 as gw

T = TypeVar("T")

#: a Not Ready reason as the ACD keeps it (the desk's reasons are configurable: meal, meeting…)
REASON = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Supervision:
    """The supervisor's peers: the ACD (agents, queues) and the gateway (calls; None in a CRM
    wired without a gateway channel, where call actions answer 503 saying so)."""

    acd: AgentControl
    calls: CallCommands | None = None


SUPERVISION = web.AppKey("supervision", Supervision)


def _acd(request: web.Request) -> AgentControl:
    return request.app[SUPERVISION].acd


def _calls(request: web.Request) -> CallCommands:
    calls = request.app[SUPERVISION].calls
    if calls is None:
        raise ApiError(503, "call control is not available: the CRM has no gateway channel")
    return calls


async def _audited(
    request: web.Request, action: str, target: str, detail: str, work: Awaitable[T]
) -> T:
    """Run a supervisor's action and audit it (`action`, or `action.refused` with the reason)."""
    user = current_user(request)
    return await audit.audited(request.app[DB], user.username, action, target, detail, work)


# -- the board ------------------------------------------------------------------------------


async def board(request: web.Request) -> web.Response:
    """GET /api/supervision/board: every agent and every queue now (then live on /ws)."""
    control = _acd(request)
    agents = await control.list_agents()
    queues = await control.list_queues()
    return web.json_response(
        {
            "agents": [board_agent(a) for a in agents],
            "queues": [board_queue(q) for q in queues],
        }
    )


# -- agents ---------------------------------------------------------------------------------


async def set_agent_state(request: web.Request) -> web.Response:
    """POST /api/supervision/agents/{agent_id}/state {"state", "reason"?}: e.g. Not Ready
    (meeting) for an agent called away, or Ready for one stuck in wrap-up."""
    agent_id = request.match_info["agent_id"]
    body = await json_body(request)
    state = text_field(body, "state", choices=tuple(REQUESTABLE_STATES))
    reason = text_field(body, "reason", required=False, max_len=32) or ""
    assert state is not None
    if reason and state != "not_ready":
        raise ApiError(400, "field reason is only allowed with state not_ready")
    if state == "not_ready" and not reason:
        raise ApiError(400, "missing field: reason (why the agent is Not Ready, e.g. meeting)")
    if reason and not REASON.fullmatch(reason):
        raise ApiError(400, "field reason must be a lower-case word such as meeting or training")
    detail = f"{state} ({reason})" if reason else state
    control = _acd(request)
    agent = await _audited(
        request,
        "supervision.agent.state",
        agent_id,
        detail,
        control.set_state(agent_id, state, reason),
    )
    return web.json_response(agent_json(agent))


async def logout_agent(request: web.Request) -> web.Response:
    """POST /api/supervision/agents/{agent_id}/logout: no more offers for this agent."""
    agent_id = request.match_info["agent_id"]
    control = _acd(request)
    agent = await _audited(
        request, "supervision.agent.logout", agent_id, "", control.logout(agent_id)
    )
    return web.json_response(agent_json(agent))


# -- calls ----------------------------------------------------------------------------------


async def monitor(request: web.Request) -> web.Response:
    """POST /api/supervision/calls/{call_id}/monitor {"mode", "extension"?}: the supervisor's
    phone is rung and joins the call listening, whispering to the agent, or barging in; again
    with another mode switches the mode."""
    user = current_user(request)
    call_id = request.match_info["call_id"]
    body = await json_body(request)
    mode = text_field(body, "mode", choices=tuple(MONITOR_MODES))
    extension = text_field(body, "extension", required=False, max_len=32) or user.extension
    assert mode is not None
    if not extension:
        raise ApiError(400, "missing field: extension (the user has no default extension)")
    if not extension.isdigit():
        raise ApiError(400, "field extension must contain digits only")
    async with request.app[DB].sessions() as session:
        allowed = await hotdesks.may_use(session, user, extension)
    detail = f"{mode} from extension {extension}"
    if not allowed:
        reason = (
            f"extension {extension} is not {user.username}'s and not an approved hot desk "
            f"(their own is {user.extension or 'not set'})"
        )
        await _audited(request, "supervision.monitor", call_id, detail, _refuse(403, reason))
    calls = _calls(request)

    async def join() -> gw.MonitorReply:
        reply = await calls.monitor(call_id, mode, user.username, extension)
        if reply.result != gw.CONNECT_RESULT_ANSWERED:
            outcome = connect_result(reply.result)
            raise ApiError(
                409, f"extension {extension} did not join the call: {outcome} {reply.detail}"
            )
        return reply

    reply = await _audited(request, "supervision.monitor", call_id, detail, join())
    return web.json_response({"call_id": call_id, "leg_id": reply.leg_id, "mode": mode})


async def stop_monitor(request: web.Request) -> web.Response:
    """POST /api/supervision/calls/{call_id}/monitor/stop {"leg_id"}: the supervisor leaves."""
    call_id = request.match_info["call_id"]
    body = await json_body(request)
    leg_id = text_field(body, "leg_id", max_len=128)
    assert leg_id is not None
    calls = _calls(request)
    await _audited(
        request,
        "supervision.monitor.stop",
        call_id,
        f"leg {leg_id}",
        calls.stop_monitor(call_id, leg_id),
    )
    return web.json_response({"call_id": call_id, "stopped": leg_id})


async def release(request: web.Request) -> web.Response:
    """POST /api/supervision/calls/{call_id}/release: force release (强拆) of the whole call."""
    user = current_user(request)
    call_id = request.match_info["call_id"]
    calls = _calls(request)
    reply = await _audited(
        request,
        "supervision.release",
        call_id,
        "",
        calls.hangup(call_id, f"forced release by supervisor {user.username}"),
    )
    return web.json_response({"call_id": call_id, "state": reply.state})


async def _refuse(status: int, message: str) -> None:
    raise ApiError(status, message)


def add_routes(app: web.Application) -> None:
    """The supervision routes; each has its entry in crm.roles.POLICY."""
    app.router.add_get("/api/supervision/board", board)
    app.router.add_post("/api/supervision/agents/{agent_id}/state", set_agent_state)
    app.router.add_post("/api/supervision/agents/{agent_id}/logout", logout_agent)
    app.router.add_post("/api/supervision/calls/{call_id}/monitor", monitor)
    app.router.add_post("/api/supervision/calls/{call_id}/monitor/stop", stop_monitor)
    app.router.add_post("/api/supervision/calls/{call_id}/release", release)
