"""The supervisor's REST API (crm.supervision) against the real ACD over mTLS: the board's
snapshot, state changes and log-outs of other agents, listen/whisper/barge and force release —
each role-checked (an agent, a team leader or QA gets 403 on the actions) and each in the audit
log, accepted or refused with the reason.

The ACD is the real servicer and dispatcher (its own gateway is the unit tests' in-memory
stand-in); the CRM's gateway is a recording CallControl server with the contract's Monitor,
StopMonitor and Hangup, because the gateway's call control is built on another branch (the e2e
tests drive the real one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.dispatcher import Dispatcher
from acd.notifier import AcdNotifier
from acd.queues import WaitingCall
from acd.servicer import AcdService
from common import rpc
from crm.agent_control import AgentControl
from crm.app import web_app
from crm.call_commands import CallCommands
from crm.cdr_store import CdrStore
from crm.db import Database
from crm.desk import DeskHub
from crm.recording_archive import RecordingArchive
from crm.supervision import Supervision
from hotline.v1 import acd_pb2_grpc, gateway_pb2_grpc
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from tests import tls as test_tls
from tests.crm_peers import nowhere
from tests.integration.test_crm_api import (  # noqa: F401 - fixtures
    as_user,
    audit_entries,
    db,
    error_of,
    tokens,
)
from tests.unit.test_acd_dispatcher import SITE, FakeGateway, FakePublisher, until

pytestmark = pytest.mark.asyncio(loop_scope="module")


class RecordingGateway(gateway_pb2_grpc.CallControlServicer):
    """The CallControl methods a supervisor uses: answers per the contract, records requests;
    `live` are the calls it has (others are NOT_FOUND), `no_answer` extensions do not pick up."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.live: set[str] = set()
        self.no_answer: set[str] = set()

    async def _known(self, call_id: str, context: grpc.aio.ServicerContext) -> None:
        if call_id not in self.live:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no call {call_id}")

    async def Monitor(
        self, request: gw.MonitorRequest, context: grpc.aio.ServicerContext
    ) -> gw.MonitorReply:
        self.requests.append(("Monitor", request))
        await self._known(request.call_id, context)
        if request.endpoint in self.no_answer:
            return gw.MonitorReply(call_id=request.call_id, result=gw.CONNECT_RESULT_NO_ANSWER)
        return gw.MonitorReply(
            call_id=request.call_id,
            leg_id=f"mon-{request.supervisor_id}",
            result=gw.CONNECT_RESULT_ANSWERED,
            mode=request.mode,
        )

    async def StopMonitor(
        self, request: gw.StopMonitorRequest, context: grpc.aio.ServicerContext
    ) -> gw.CallReply:
        self.requests.append(("StopMonitor", request))
        await self._known(request.call_id, context)
        return gw.CallReply(call_id=request.call_id, state="bridged")

    async def Hangup(
        self, request: gw.HangupRequest, context: grpc.aio.ServicerContext
    ) -> gw.CallReply:
        self.requests.append(("Hangup", request))
        await self._known(request.call_id, context)
        self.live.discard(request.call_id)
        return gw.CallReply(call_id=request.call_id, state="ended")


SUPERVISED = rpc.callers(
    "hotline.v1.CallControl", {m: {"crm"} for m in ("Monitor", "StopMonitor", "Hangup")}
)


@pytest_asyncio.fixture(loop_scope="module")
async def site(
    db: Database,  # noqa: F811
) -> AsyncIterator[tuple[TestClient, Dispatcher, RecordingGateway]]:
    d = Dispatcher(AcdNotifier(FakePublisher()), FakeGateway(), ["sales", "support"], SITE, 3, 60)
    d.start()
    acd_srv, acd_port = test_tls.server(
        "acd", acd_pb2_grpc.add_AcdServicer_to_server, AcdService(d)
    )
    gateway = RecordingGateway()
    gw_srv, gw_port = test_tls.server(
        "gateway", gateway_pb2_grpc.add_CallControlServicer_to_server, gateway, SUPERVISED
    )
    await acd_srv.start()
    await gw_srv.start()
    to_acd = rpc.channel(f"127.0.0.1:{acd_port}", test_tls.tls("crm"), "acd")
    to_gateway = rpc.channel(f"127.0.0.1:{gw_port}", test_tls.tls("crm"), "gateway")
    cdrs = CdrStore(db)
    control = AgentControl(to_acd)
    app = web_app(
        db,
        control,
        cdrs,
        DeskHub(db, cdrs),
        gateway=CallCommands(to_gateway),
        recorder=RecordingArchive(nowhere("crm", "recorder")),
        supervision=Supervision(control, CallCommands(to_gateway)),
    )
    async with TestClient(TestServer(app)) as client:
        yield client, d, gateway
    await to_acd.close()
    await to_gateway.close()
    await acd_srv.stop(None)
    await gw_srv.stop(None)
    await d.stop()
    await asyncio.gather(*(t for t in [d._loop_task, *d._tasks] if t), return_exceptions=True)


async def staff(d: Dispatcher) -> None:
    """agent1 talking on c1 (sales), agent2 Ready for support, a caller waiting in support."""
    await d.login("agent1", "8001", frozenset({"sales"}), frozenset())
    await d.set_state("agent1", ev.AGENT_STATE_READY, "")
    await d.enqueue(WaitingCall("c1", "sales", 0, "13800138000", "10000"))
    await until(lambda: d.book.get("agent1").state == ev.AGENT_STATE_ON_CALL)
    await d.login("agent2", "8002", frozenset({"support"}), frozenset())
    await d.enqueue(WaitingCall("w1", "support", 2, "13900000001", "10000"))


async def test_the_board_snapshot_for_watchers_only(
    site: tuple[TestClient, Dispatcher, RecordingGateway],
    tokens: dict[str, str],  # noqa: F811
) -> None:
    client, d, _ = site
    await staff(d)
    for username in ("supervisor", "lead1", "admin"):
        response = await client.get(
            "/api/supervision/board", headers=await as_user(client, tokens, username)
        )
        assert response.status == 200, await response.text()
    body = await response.json()
    agents = {a["agent_id"]: a for a in body["agents"]}
    assert {k: agents["agent1"][k] for k in ("state", "call_id", "queue", "extension")} == {
        "state": "on_call",
        "call_id": "c1",
        "queue": "sales",
        "extension": "8001",
    }
    assert agents["agent1"]["state_since_ms"] > 0
    assert (agents["agent2"]["state"], agents["agent2"]["queue"]) == ("not_ready", "")
    queues = {q["queue"]: q for q in body["queues"]}
    assert [w["call_id"] for w in queues["support"]["waiting"]] == ["w1"]
    assert queues["support"]["waiting"][0]["priority"] == 2
    assert queues["support"]["service_level"] is None  # no call left support yet: no data
    assert queues["sales"]["service_level"] == 1.0 and queues["sales"]["abandon_rate"] == 0.0
    assert queues["sales"]["agents_by_state"] == {"on_call": 1}
    for username in ("agent1", "qa1"):
        response = await client.get(
            "/api/supervision/board", headers=await as_user(client, tokens, username)
        )
        assert "may not use GET /api/supervision/board" in await error_of(response, 403)


async def test_a_supervisor_changes_an_agents_state_and_it_is_audited(
    site: tuple[TestClient, Dispatcher, RecordingGateway],
    db: Database,  # noqa: F811
    tokens: dict[str, str],  # noqa: F811
) -> None:
    client, d, _ = site
    await staff(d)
    headers = await as_user(client, tokens, "supervisor")
    response = await client.post(
        "/api/supervision/agents/agent2/state",
        json={"state": "not_ready", "reason": "meeting"},
        headers=headers,
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["reason"] == "meeting"
    assert (d.book.get("agent2").state, d.book.get("agent2").reason) == (
        ev.AGENT_STATE_NOT_READY,
        "meeting",
    )
    (entry,) = await audit_entries(db, "supervisor", "supervision.agent.state")
    assert (entry.target, entry.detail) == ("agent2", "not_ready (meeting)")
    # Not Ready needs a reason; the ACD refuses to log out an agent on a call: both say why
    response = await client.post(
        "/api/supervision/agents/agent2/state", json={"state": "not_ready"}, headers=headers
    )
    assert "missing field: reason" in await error_of(response, 400)
    response = await client.post(
        "/api/supervision/agents/agent2/state",
        json={"state": "not_ready", "reason": "<script>"},
        headers=headers,
    )
    assert "must be a lower-case word" in await error_of(response, 400)
    response = await client.post("/api/supervision/agents/agent1/logout", headers=headers)
    message = await error_of(response, 409)
    assert message == "agent agent1 cannot go from on_call to logged_out"
    (refused,) = await audit_entries(db, "supervisor", "supervision.agent.logout.refused")
    assert refused.target == "agent1" and message in refused.detail
    response = await client.post("/api/supervision/agents/agent2/logout", headers=headers)
    assert response.status == 200 and (await response.json())["state"] == "logged_out"
    assert d.book.get("agent2").state == ev.AGENT_STATE_LOGGED_OUT
    # an agent may not do it to a colleague
    response = await client.post(
        "/api/supervision/agents/agent1/state",
        json={"state": "not_ready", "reason": "meal"},
        headers=await as_user(client, tokens, "agent2"),
    )
    assert "role agent may not use" in await error_of(response, 403)


async def test_listen_whisper_barge_stop_and_force_release(
    site: tuple[TestClient, Dispatcher, RecordingGateway],
    db: Database,  # noqa: F811
    tokens: dict[str, str],  # noqa: F811
) -> None:
    client, d, gateway = site
    gateway.live = {"c1"}
    sup = await as_user(client, tokens, "supervisor")
    admin = await as_user(client, tokens, "admin")
    monitor = "/api/supervision/calls/c1/monitor"
    # the supervisor has no extension of their own: they must name one they may use
    response = await client.post(monitor, json={"mode": "listen"}, headers=sup)
    assert "missing field: extension" in await error_of(response, 400)
    response = await client.post(monitor, json={"mode": "listen", "extension": "8090"}, headers=sup)
    assert "extension 8090 is not supervisor's" in await error_of(response, 403)
    (refused,) = await audit_entries(db, "supervisor", "supervision.monitor.refused")
    assert refused.target == "c1" and "8090" in refused.detail
    response = await client.post(
        "/api/hotdesks", json={"extension": "8090", "note": "supervisor desk"}, headers=admin
    )
    assert response.status == 201, await response.text()
    for mode in ("listen", "whisper", "barge"):  # joining, then switching
        response = await client.post(monitor, json={"mode": mode, "extension": "8090"}, headers=sup)
        assert response.status == 200, await response.text()
        assert await response.json() == {"call_id": "c1", "leg_id": "mon-supervisor", "mode": mode}
    asked = [r for name, r in gateway.requests if name == "Monitor"]
    assert [(r.mode, r.endpoint, r.supervisor_id) for r in asked] == [
        (gw.MONITOR_MODE_LISTEN, "8090", "supervisor"),
        (gw.MONITOR_MODE_WHISPER, "8090", "supervisor"),
        (gw.MONITOR_MODE_BARGE, "8090", "supervisor"),
    ]
    entries = await audit_entries(db, "supervisor", "supervision.monitor")
    assert [e.detail for e in entries] == [
        f"{m} from extension 8090" for m in ("listen", "whisper", "barge")
    ]
    response = await client.post(f"{monitor}/stop", json={"leg_id": "mon-supervisor"}, headers=sup)
    assert response.status == 200
    assert gateway.requests[-1] == (
        "StopMonitor",
        gw.StopMonitorRequest(call_id="c1", leg_id="mon-supervisor"),
    )
    # a phone that does not pick up: 409 saying so, audited as refused
    gateway.no_answer = {"8090"}
    response = await client.post(monitor, json={"mode": "listen", "extension": "8090"}, headers=sup)
    assert "did not join the call: no_answer" in await error_of(response, 409)
    # force release
    response = await client.post("/api/supervision/calls/c1/release", headers=sup)
    assert response.status == 200 and (await response.json())["state"] == "ended"
    name, hangup = gateway.requests[-1]
    assert name == "Hangup" and hangup.reason == "forced release by supervisor supervisor"
    (released,) = await audit_entries(db, "supervisor", "supervision.release")
    assert released.target == "c1"
    response = await client.post("/api/supervision/calls/c1/release", headers=sup)
    assert await error_of(response, 404) == "no call c1"
    (gone,) = await audit_entries(db, "supervisor", "supervision.release.refused")
    assert "no call c1" in gone.detail
    # nobody below a supervisor
    for username in ("agent1", "lead1", "qa1"):
        response = await client.post(
            "/api/supervision/calls/c1/release", headers=await as_user(client, tokens, username)
        )
        assert await error_of(response, 403)
