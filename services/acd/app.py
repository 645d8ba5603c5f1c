"""Wires the ACD: dispatcher, gRPC API, events in (`calls`) and out, KPI collector."""

from __future__ import annotations

from acd.dispatcher import Dispatcher
from acd.intake import AcdIntake
from acd.kpis import QueueKpiCollector
from acd.notifier import AcdNotifier
from acd.servicer import AcdService
from acd.settings import AcdSettings
from common.health import Readiness
from common.service import Stop, Wiring
from hotline.v1 import acd_pb2_grpc, gateway_pb2_grpc


async def main(settings: AcdSettings, readiness: Readiness) -> Stop:
    wiring = Wiring("acd", settings, readiness)
    notifier = AcdNotifier(wiring.publisher())
    gateway = gateway_pb2_grpc.CallControlStub(wiring.channel("gateway"))
    dispatcher = Dispatcher(
        notifier,
        gateway,
        list(settings.queues),
        settings.site,
        settings.ring_timeout_s,
        settings.wrap_up_s,
    )
    dispatcher.start()
    wiring.on_stop(dispatcher.stop, "dispatcher")
    wiring.collector(QueueKpiCollector(dispatcher, settings.site))
    wiring.consumer(["calls"], AcdIntake(dispatcher).handle)
    wiring.servicer(acd_pb2_grpc.add_AcdServicer_to_server, AcdService(dispatcher))
    return await wiring.start()
