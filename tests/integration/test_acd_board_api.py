"""The ACD's board and requeue API over real gRPC with the services' mTLS identities: the
gateway sends an answered call back to a queue (Requeue), the CRM reads the board snapshots
(ListAgents, ListQueues); each refuses the services its CALLERS table does not name.

The ACD is the real servicer and dispatcher; the gateway it drives is the in-memory stand-in of
the unit tests (what it answers is scripted), because the subject here is the ACD's API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from acd.agents import ON_CALL, WRAP_UP
from acd.dispatcher import Dispatcher
from acd.notifier import AcdNotifier
from acd.queues import WaitingCall
from acd.servicer import AcdService
from hotline.v1 import acd_pb2, acd_pb2_grpc
from hotline.v1 import events_pb2 as ev
from tests import tls as test_tls
from tests.unit.test_acd_dispatcher import SITE, FakeGateway, FakePublisher, until


@pytest.fixture
async def acd() -> AsyncIterator[tuple[Dispatcher, int]]:
    d = Dispatcher(AcdNotifier(FakePublisher()), FakeGateway(), ["sales", "support"], SITE, 3, 30)
    d.start()
    srv, port = test_tls.server("acd", acd_pb2_grpc.add_AcdServicer_to_server, AcdService(d))
    await srv.start()
    yield d, port
    await srv.stop(None)
    await d.stop()
    await asyncio.gather(*(t for t in [d._loop_task, *d._tasks] if t), return_exceptions=True)


async def answered(d: Dispatcher, call_id: str, agent_id: str, ext: str) -> None:
    await d.login(agent_id, ext, frozenset({"sales"}), frozenset())
    await d.set_state(agent_id, ev.AGENT_STATE_READY, "")
    await d.enqueue(
        WaitingCall(call_id, "sales", 3, "13800138000", "10000", frozenset(), {"member": "gold"})
    )
    await until(lambda: d.book.get(agent_id).state == ON_CALL)


async def test_the_gateway_requeues_and_the_crm_sees_it_on_the_board(
    acd: tuple[Dispatcher, int],
) -> None:
    d, port = acd
    await answered(d, "c1", "agent1", "8001")
    async with test_tls.channel("gateway", "acd", port) as channel:
        reply = await acd_pb2_grpc.AcdStub(channel).Requeue(
            acd_pb2.RequeueRequest(call_id="c1", queue="support", from_agent_id="agent1"),
            timeout=5,
        )
    assert (reply.call_id, reply.queue, reply.position) == ("c1", "support", 1)
    async with test_tls.channel("crm", "acd", port) as channel:
        stub = acd_pb2_grpc.AcdStub(channel)
        agents = (await stub.ListAgents(acd_pb2.ListAgentsRequest(), timeout=5)).agents
        queues = (await stub.ListQueues(acd_pb2.ListQueuesRequest(), timeout=5)).queues
    (agent,) = agents
    assert (agent.agent_id, agent.state, agent.call_id, agent.queue) == (
        "agent1",
        WRAP_UP,
        "c1",
        "sales",
    )
    assert agent.reason == "transferred to queue support"
    by_name = {q.queue: q for q in queues}
    assert [(c.call_id, c.priority, c.ani) for c in by_name["support"].calls] == [
        ("c1", 3, "13800138000")
    ]
    sales = by_name["sales"]
    assert (sales.answered, sales.window_ended, sales.service_level, sales.abandon_rate) == (
        1,
        1,
        1.0,
        0.0,
    )
    assert d.queues["support"].calls[0].data == {"member": "gold"}


async def test_unknown_call_or_queue_is_not_found_with_a_message(
    acd: tuple[Dispatcher, int],
) -> None:
    d, port = acd
    await answered(d, "c1", "agent1", "8001")
    async with test_tls.channel("gateway", "acd", port) as channel:
        stub = acd_pb2_grpc.AcdStub(channel)
        for request, details in (
            (
                acd_pb2.RequeueRequest(call_id="ghost", queue="support"),
                "call ghost is not on an agent of this ACD: nothing to requeue",
            ),
            (
                acd_pb2.RequeueRequest(call_id="c1", queue="billing"),
                "queue 'billing' does not exist (have: sales, support)",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Requeue(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert info.value.details() == details
    assert d.book.get("agent1").state == ON_CALL  # nothing moved


@pytest.mark.parametrize(
    ("caller", "method", "request_"),
    [
        ("crm", "Requeue", acd_pb2.RequeueRequest(call_id="c1", queue="support")),
        ("ivr", "Requeue", acd_pb2.RequeueRequest(call_id="c1", queue="support")),
        ("gateway", "ListAgents", acd_pb2.ListAgentsRequest()),
        ("ivr", "ListQueues", acd_pb2.ListQueuesRequest()),
    ],
)
async def test_other_services_are_refused(
    acd: tuple[Dispatcher, int], caller: str, method: str, request_: object
) -> None:
    _, port = acd
    async with test_tls.channel(caller, "acd", port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(acd_pb2_grpc.AcdStub(channel), method)(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"service {caller} may not call /hotline.v1.Acd/{method}" in (info.value.details() or "")
