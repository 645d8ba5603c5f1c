"""The desktop's live feed: a websocket per browser and the pushes that drive it.

Each agent's browser gets its own offers (with the customer card — the screen pop), state
changes, connects and hang-ups; supervisors and team leaders get everyone's, and the queue
changes their board follows (`crm.board`). The screen pop
is pushed straight from the AgentOffered event, before any bookkeeping, because the standard
is to greet the caller by name within three rings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from common.events import Envelope, payload_of
from crm.agent_control import state_name
from crm.auth import current_user, presented_token, session_expiry, token_hash
from crm.board import board_message
from crm.cdr import end_reason_name
from crm.cdr_store import CdrStore
from crm.customers import find_by_phone
from crm.db import Database
from crm.metrics import WS_CLIENTS
from crm.models import User
from crm.rest import ApiError
from crm.roles import WATCHERS
from hotline.v1 import events_pb2

log = logging.getLogger(__name__)

#: an offer older than this (a replay after a restart) would pop a call long gone.
STALE_OFFER_S = 60.0
#: a browser that cannot take a message this fast is dropped rather than delay the others.
SEND_TIMEOUT_S = 2.0
#: calls remembered for routing "ended" to the agent on the call; older ones ask the CDR.
_REMEMBERED_CALLS = 10_000


#: call-control events -> the desk message type they become.
_CALL_STEPS = {
    "CallHeld": "held",
    "CallResumed": "resumed",
    "CallTransferred": "transferred",
    "ConsultStarted": "consult_started",
    "ConsultEnded": "consult_ended",
    "ConferenceJoined": "party_joined",
    "ConferenceLeft": "party_left",
}
#: payload fields the desk uses, copied when the event has them.
_STEP_FIELDS = (
    "leg_id",
    "consult_leg_id",
    "by",
    "held_ms",
    "kind",
    "target_kind",
    "target",
    "from_agent_id",
    "to_agent_id",
    "outcome",
    "party",
    "parties",
)


@dataclass(eq=False)
class DeskClient:
    """One open websocket and whose it is."""

    ws: web.WebSocketResponse
    username: str
    agent_id: str | None
    watcher: bool
    session_hash: str
    expires_at: float = field(default=float("inf"))


class DeskHub:
    """Routes call and agent events to the browsers that should see them."""

    def __init__(self, db: Database, cdrs: CdrStore) -> None:
        self.db = db
        self.cdrs = cdrs
        self._clients: set[DeskClient] = set()
        self._call_agent: OrderedDict[str, str] = OrderedDict()

    # -- connections ----------------------------------------------------------------------

    def join(self, client: DeskClient) -> None:
        self._clients.add(client)
        WS_CLIENTS.inc()

    def leave(self, client: DeskClient) -> None:
        if client in self._clients:
            self._clients.discard(client)
            WS_CLIENTS.dec()

    async def end_session(
        self, session_hash: str, code: int = 4001, why: bytes = b"logged out"
    ) -> None:
        """Close the sockets of a session that logged out (or locked its screen: 4003)."""
        for client in [c for c in self._clients if c.session_hash == session_hash]:
            self.leave(client)
            await client.ws.close(code=code, message=why)

    async def close_all(self) -> None:
        for client in list(self._clients):
            self.leave(client)
            await client.ws.close(code=1001, message=b"server shutdown")

    # -- events ---------------------------------------------------------------------------

    async def on_event(self, env: Envelope) -> None:
        """Push whatever the envelope means to the desks concerned (no-op for other types);
        with no desk open, only note what later pushes need to know."""
        try:
            if self._clients:
                await self._push_event(env)
        finally:
            self._note(env)

    async def _push_event(self, env: Envelope) -> None:
        if (board := board_message(env)) is not None:
            await self.to_watchers(board)
        if env.type == "AgentOffered":
            await self._offered(env, env.agent_offered)
        elif env.type == "AgentStateChanged":
            p: Any = payload_of(env)
            await self.push(
                p.agent_id,
                {
                    "type": "state",
                    "agent_id": p.agent_id,
                    "state": state_name(p.state),
                    "previous": state_name(p.previous),
                    "reason": p.reason,
                    "extension": p.extension,
                    "call_id": p.call_id,
                    "queue": p.queue,
                    "since_ms": p.since_ms,
                },
            )
        elif env.type == "CallBridged":
            p = payload_of(env)
            if p.agent_id:
                await self.push(
                    p.agent_id,
                    {
                        "type": "connected",
                        "agent_id": p.agent_id,
                        "call_id": p.call_id,
                        "queue": p.queue,
                    },
                )
        elif env.type == "CallEnded":
            p = payload_of(env)
            agent_id = self._call_agent.get(p.call_id) or await self.cdrs.agent_of(p.call_id)
            if agent_id:
                await self.push(
                    agent_id,
                    {
                        "type": "ended",
                        "agent_id": agent_id,
                        "call_id": p.call_id,
                        "reason": end_reason_name(p.reason),
                    },
                )

        elif env.type in _CALL_STEPS:
            await self._call_step(env)

    async def _call_step(self, env: Envelope) -> None:
        """Hold, transfer, consult and conference steps, from the desk or the phone: the
        agent's desk follows them (a phone-driven hold shows the hold timer too)."""
        p: Any = payload_of(env)
        agent_id = getattr(p, "agent_id", "") or getattr(p, "from_agent_id", "")
        agent_id = (
            agent_id or self._call_agent.get(p.call_id) or await self.cdrs.agent_of(p.call_id)
        )
        message: dict[str, Any] = {"type": _CALL_STEPS[env.type], "call_id": p.call_id}
        for name in _STEP_FIELDS:
            if hasattr(p, name):
                message[name] = getattr(p, name)
        if env.type == "CallTransferred" and p.to_agent_id and p.to_agent_id != agent_id:
            await self.push(p.to_agent_id, message | {"agent_id": p.to_agent_id})
        if agent_id:
            await self.push(agent_id, message | {"agent_id": agent_id})

    def _note(self, env: Envelope) -> None:
        """Keep which agent is on which call (after the event's pushes, which read it as it
        stood before the event)."""
        if env.type == "AgentOffered":
            self._remember(env.agent_offered.call_id, env.agent_offered.agent_id)
        elif env.type == "CallBridged" and env.call_bridged.agent_id:
            self._remember(env.call_bridged.call_id, env.call_bridged.agent_id)
        elif env.type == "CallTransferred" and env.call_transferred.to_agent_id:
            self._remember(env.call_transferred.call_id, env.call_transferred.to_agent_id)
        elif env.type == "CallEnded":
            self._call_agent.pop(env.call_ended.call_id, None)

    async def _offered(self, env: Envelope, p: events_pb2.AgentOffered) -> None:
        age = time.time() - env.occurred_at.ToNanoseconds() / 1e9
        if age > STALE_OFFER_S:
            log.info("not popping stale offer of %s to %s (%.0f s old)", p.call_id, p.agent_id, age)
            return
        if not any(c.watcher or c.agent_id == p.agent_id for c in self._clients):
            return  # nobody would see the card: no customer lookup
        async with self.db.sessions() as session:
            customer = await find_by_phone(session, p.ani)
        await self.push(
            p.agent_id,
            {
                "type": "offer",
                "agent_id": p.agent_id,
                "call_id": p.call_id,
                "ani": p.ani,
                "dnis": p.dnis,
                "queue": p.queue,
                "extension": p.extension,
                "attempt": p.attempt,
                "waited_ms": p.waited_ms,
                "offered_at_ms": env.occurred_at.ToMilliseconds(),
                "customer": customer.public() if customer else None,
            },
        )

    def _remember(self, call_id: str, agent_id: str) -> None:
        self._call_agent[call_id] = agent_id
        self._call_agent.move_to_end(call_id)
        while len(self._call_agent) > _REMEMBERED_CALLS:
            self._call_agent.popitem(last=False)

    async def push(self, agent_id: str, message: dict[str, Any]) -> None:
        """Send to the agent's own desks and to every watcher, all at once."""
        await self._push(message, lambda c: c.watcher or c.agent_id == agent_id)

    async def to_watchers(self, message: dict[str, Any]) -> None:
        """Send to the supervisors' and team leaders' desks only (their board)."""
        await self._push(message, lambda c: c.watcher)

    async def _push(self, message: dict[str, Any], wanted: Callable[[DeskClient], bool]) -> None:
        now = time.time()
        for client in [c for c in self._clients if c.expires_at <= now]:
            self.leave(client)
            await client.ws.close(code=4001, message=b"session expired")
        targets = [c for c in self._clients if wanted(c)]
        if targets:
            await asyncio.gather(*(self._send(c, message) for c in targets))

    async def _send(self, client: DeskClient, message: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(client.ws.send_json(message), SEND_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.warning("dropping desk socket of %s: %r", client.username, exc)
            self.leave(client)
            await client.ws.close()


HUB = web.AppKey("desk_hub", DeskHub)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: the live feed. Auth by cookie, bearer header or `?token=`."""
    user: User = current_user(request)
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        raise ApiError(403, f"websocket from foreign origin {origin} refused")
    token = presented_token(request) or ""
    expires = await session_expiry(request, token)
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    client = DeskClient(
        ws=ws,
        username=user.username,
        agent_id=user.agent_id,
        watcher=user.role in WATCHERS,
        session_hash=token_hash(token),
        expires_at=expires,
    )
    hub = request.app[HUB]
    hub.join(client)
    try:
        await ws.send_json({"type": "hello", "user": user.public()})
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_json({"type": "pong"})
    finally:
        hub.leave(client)
    return ws
