"""Wires the ACD: dispatcher, gRPC API, events in (`calls`) and out, KPI collector."""
from __future__ import annotations

from hotline.v1 import acd_pb2_grpc, gateway_pb2_grpc
from prometheus_client import REGISTRY

from acd.dispatcher import Dispatcher
from acd.kpis import QueueKpiCollector
from acd.service import AcdService
from acd.settings import AcdSettings
from common import rpc
from common.events import Envelope, EventConsumer, EventPublisher
from common.health import Readiness
from common.service import Stop


async def main(settings: AcdSettings, readiness: Readiness) -> Stop:
    publisher = EventPublisher(settings, "acd", readiness)
    publisher.start()
    gateway_channel = rpc.channel(settings.grpc_target("gateway"))
    dispatcher = Dispatcher(publisher, gateway_pb2_grpc.CallControlStub(gateway_channel),
                            list(settings.queues), settings.site, settings.ring_timeout_s,
                            settings.wrap_up_s)
    collector = QueueKpiCollector(dispatcher, settings.site)
    REGISTRY.register(collector)

    async def on_event(env: Envelope) -> None:
        if env.WhichOneof("payload") == "call_ended":
            await dispatcher.call_ended(env.call_ended.call_id, env.call_ended.reason)

    consumer = EventConsumer(settings, "acd", ["calls"], on_event, readiness)
    consumer.start()
    dispatcher.start()
    server = rpc.server(settings.bind_host, settings.grpc_ports["acd"])
    acd_pb2_grpc.add_AcdServicer_to_server(AcdService(dispatcher), server)
    await server.start()

    async def stop() -> None:
        await server.stop(grace=2)
        await dispatcher.stop()
        await consumer.stop()
        await publisher.stop()
        await gateway_channel.close()
        REGISTRY.unregister(collector)

    return stop

