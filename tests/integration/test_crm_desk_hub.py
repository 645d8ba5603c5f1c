"""The desk hub with no desk open: events cost no database work (no customer lookup for a
screen pop nobody sees, no CDR question for a push nobody gets), yet the hub keeps who is on
which call, so a desk opened later still gets its call's end. A real websocket over aiohttp."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from common.events import envelope
from crm.cdr_store import CdrStore
from crm.db import Database
from crm.desk import DeskClient, DeskHub
from hotline.v1 import events_pb2 as ev

SITE = "hub-site"


async def desk(hub: DeskHub, agent_id: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A browser's socket, joined to the hub as `agent_id`'s desk."""

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = DeskClient(ws, "alice", agent_id, watcher=False, session_hash="h")
        hub.join(client)
        try:
            async for _ in ws:
                pass
        finally:
            hub.leave(client)
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            yield ws
    finally:
        await runner.cleanup()


async def test_with_no_desk_open_events_touch_no_database_and_calls_are_still_followed(
    tmp_path: Path,
) -> None:
    # a database that cannot even be opened: any query would raise
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/crm.sqlite")
    hub = DeskHub(db, CdrStore(db))
    for payload, key in (
        (ev.AgentOffered(call_id="c1", agent_id="a1", ani="5551234", queue="sales"), "c1"),
        (ev.AgentStateChanged(agent_id="a1", state=ev.AGENT_STATE_ON_CALL), "a1"),
        (ev.CallBridged(call_id="c1", agent_id="a1", queue="sales"), "c1"),
        (ev.CallHeld(call_id="c2"), "c2"),  # no agent named: the CDR would be asked
        (ev.CallEnded(call_id="c2"), "c2"),
    ):
        await hub.on_event(envelope(payload, key, SITE, "test"))
    sockets = desk(hub, "a1")
    ws = await anext(sockets)
    try:
        await hub.on_event(envelope(ev.CallEnded(call_id="c1"), "c1", SITE, "gateway"))
        assert await ws.receive_json(timeout=5) == {
            "type": "ended",
            "agent_id": "a1",
            "call_id": "c1",
            "reason": "unspecified",
        }
    finally:
        await sockets.aclose()
    await db.dispose()
