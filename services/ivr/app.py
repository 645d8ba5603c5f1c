"""Wires the IVR: takes offered calls from `calls`, runs their flow, serves `Ivr.ListFlows`."""

from __future__ import annotations

import asyncio
import logging

import grpc

from common.health import Readiness
from common.service import Stop, Wiring
from hotline.v1 import acd_pb2_grpc, gateway_pb2_grpc, ivr_pb2_grpc
from hotline.v1 import gateway_pb2 as gw
from ivr.flows import load_flows
from ivr.intake import IvrIntake
from ivr.runner import FlowRunner
from ivr.servicer import IvrService
from ivr.settings import IvrSettings

log = logging.getLogger(__name__)

#: how long the IVR waits at start for the gateway to list the calls its previous run had
TAKE_UP_WAIT_S = 30.0
#: how often the IVR tells the gateway it is alive (and asks for orphaned calls); the
#: gateway's HOTLINE_GATEWAY_FLOW_OWNER_TIMEOUT_S (20 s) is several of these
HEARTBEAT_S = 5.0


async def adopt_orphans(
    gateway: gateway_pb2_grpc.CallControlAsyncStub, intake: IvrIntake, instance: str
) -> None:
    """Says every `HEARTBEAT_S` that this IVR is alive, and runs the flows of the calls the
    gateway hands it: those of an IVR silent for the gateway's owner timeout (its pod was
    replaced, so no restart under its name takes them up)."""
    failing = False
    while True:
        try:
            reply = await gateway.AdoptOrphans(
                gw.AdoptOrphansRequest(instance=instance), timeout=HEARTBEAT_S
            )
        except grpc.aio.AioRpcError as exc:
            if not failing:  # once per outage, not every 5 s
                log.warning("cannot tell the gateway this IVR is alive: %s", exc.details())
            failing = True
        else:
            if failing:
                log.info("the gateway hears this IVR again")
            failing = False
            intake.take_up(reply.calls, instance, "an IVR that is gone")
        await asyncio.sleep(HEARTBEAT_S)


async def main(settings: IvrSettings, readiness: Readiness) -> Stop:
    flows = load_flows(settings.flows_file)
    log.info(
        "loaded %d flows: %s", len(flows), ", ".join(f"{d}={f.name}" for d, f in flows.items())
    )
    wiring = Wiring("ivr", settings, readiness)
    gateway = gateway_pb2_grpc.CallControlStub(wiring.channel("gateway"))
    runner = FlowRunner(
        gateway, acd_pb2_grpc.AcdStub(wiring.channel("acd")), settings.acd_wait_s, settings.instance
    )
    intake = IvrIntake(flows, runner)
    wiring.on_stop(intake.stop, "flows in progress")
    consumer = wiring.consumer(["calls"], intake.handle, kinds=IvrIntake.KINDS)

    async def drain(budget_s: float) -> None:
        # no new flow here: the offers not yet taken stay on the broker for the next IVR
        await consumer.stop()
        await intake.drain(budget_s)

    wiring.on_drain(drain, "flows in progress")

    async def take_up() -> None:
        # the calls whose flows died with this IVR's previous run (kill -9, OOM)
        try:
            reply = await gateway.ListCalls(
                gw.ListCallsRequest(), timeout=TAKE_UP_WAIT_S, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("cannot ask the gateway for calls left in this IVR's flows: %s", exc)
        else:
            intake.take_up(reply.calls, settings.instance)
        # then, for as long as it runs: alive, and the calls of an IVR that is gone
        await adopt_orphans(gateway, intake, settings.instance)

    wiring.task(take_up(), "take up calls")
    wiring.servicer(ivr_pb2_grpc.add_IvrServicer_to_server, IvrService(flows))
    return await wiring.start()
