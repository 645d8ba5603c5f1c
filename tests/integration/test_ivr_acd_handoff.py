"""The IVR hands a call to an ACD that is restarting, over real mutual-TLS gRPC: the caller
waits on hold music while the ACD's port is closed and is queued once an ACD serves it again;
an ACD that does not come back within the wait is told to the caller and the call ends."""

from __future__ import annotations

import asyncio
import socket

import pytest

from acd.dispatcher import Dispatcher
from acd.notifier import AcdNotifier
from acd.servicer import AcdService
from common import rpc
from hotline.v1 import acd_pb2_grpc
from ivr.runner import FlowRunner
from tests import tls as test_tls
from tests.unit.test_acd_dispatcher import FakeGateway as AcdGateway
from tests.unit.test_acd_dispatcher import FakePublisher
from tests.unit.test_ivr_runner import HUMAN
from tests.unit.test_ivr_runner import FakeGateway as IvrGateway

pytestmark = pytest.mark.asyncio

#: how long the ACD is away, and how long the IVR waits for it (a bound: the channel tries
#: again every 2 s at most, docs/ivr.md)
DOWN_S = 3.0
WAIT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_caller_waits_on_hold_music_for_a_restarting_acd_and_is_queued() -> None:
    port = free_port()
    ivr_gateway = IvrGateway(("1", "max_digits"))
    channel = rpc.channel(f"127.0.0.1:{port}", test_tls.tls("ivr"), "acd")
    dispatcher = Dispatcher(
        AcdNotifier(FakePublisher()), AcdGateway(), ["sales"], "site", ring_timeout_s=5, wrap_up_s=1
    )
    try:
        runner = FlowRunner(ivr_gateway, acd_pb2_grpc.AcdStub(channel), acd_wait_s=WAIT_S)
        flow = asyncio.create_task(runner.run(HUMAN, "c1", "5551234", "10000"))
        await asyncio.sleep(DOWN_S)  # the ACD restarting: nothing listens on its port
        assert not flow.done()
        hold = ivr_gateway.requests("Play")[-1]
        assert (hold.prompt, hold.loop) == ("hold", True)
        srv, bound = rpc.server("127.0.0.1", port, test_tls.tls("acd"), AcdService.CALLERS)
        acd_pb2_grpc.add_AcdServicer_to_server(AcdService(dispatcher), srv)
        await srv.start()
        try:
            assert await flow == "sales"
        finally:
            await srv.stop(None)
        (waiting,) = dispatcher.queues["sales"].calls
        assert (waiting.call_id, waiting.ani, waiting.data["menu"]) == ("c1", "5551234", "1")
        assert "Hangup" not in ivr_gateway.names()
    finally:
        await channel.close()


async def test_an_acd_that_does_not_come_back_is_told_to_the_caller() -> None:
    ivr_gateway = IvrGateway(("2", "max_digits"))
    channel = rpc.channel(f"127.0.0.1:{free_port()}", test_tls.tls("ivr"), "acd")
    try:
        runner = FlowRunner(ivr_gateway, acd_pb2_grpc.AcdStub(channel), acd_wait_s=1.5)
        assert await runner.run(HUMAN, "c2", "5551234", "10000") == "acd-unavailable"
    finally:
        await channel.close()
    assert [p.prompt for p in ivr_gateway.requests("Play")][-2:] == ["hold", "unavailable"]
    assert ivr_gateway.names()[-1] == "Hangup"


async def test_a_flow_naming_a_queue_the_acd_lacks_tells_the_caller_and_ends_the_call() -> None:
    # the real ACD's NOT_FOUND for an unknown queue: before, the IVR took it for a caller who
    # had hung up ("caller-gone") and left the caller on a silent line
    port = free_port()
    dispatcher = Dispatcher(
        AcdNotifier(FakePublisher()), AcdGateway(), ["sales"], "site", ring_timeout_s=5, wrap_up_s=1
    )
    srv, _ = rpc.server("127.0.0.1", port, test_tls.tls("acd"), AcdService.CALLERS)
    acd_pb2_grpc.add_AcdServicer_to_server(AcdService(dispatcher), srv)
    await srv.start()
    ivr_gateway = IvrGateway(("2", "max_digits"))  # "2": support, a queue this ACD lacks
    channel = rpc.channel(f"127.0.0.1:{port}", test_tls.tls("ivr"), "acd")
    try:
        runner = FlowRunner(ivr_gateway, acd_pb2_grpc.AcdStub(channel), acd_wait_s=WAIT_S)
        assert await runner.run(HUMAN, "c3", "5551234", "10000") == "acd-refused"
    finally:
        await channel.close()
        await srv.stop(None)
    assert [p.prompt for p in ivr_gateway.requests("Play")][-1] == "unavailable"
    (hangup,) = ivr_gateway.requests("Hangup")
    assert hangup.reason.startswith("the ACD refused the call: NOT_FOUND queue 'support'")
    assert dispatcher.queues["sales"].calls == []
