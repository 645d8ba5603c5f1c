"""Wires the IVR: takes offered calls from `calls`, runs their flow, serves `Ivr.ListFlows`."""
from __future__ import annotations

import asyncio
import logging

from hotline.v1 import acd_pb2_grpc, gateway_pb2_grpc, ivr_pb2, ivr_pb2_grpc

from common import rpc
from common.events import Envelope, EventConsumer
from common.health import Readiness
from common.service import Stop
from ivr.flows import Flow, load_flows
from ivr.runner import FlowRunner
from ivr.settings import IvrSettings

log = logging.getLogger(__name__)


class IvrService(ivr_pb2_grpc.IvrServicer):
    def __init__(self, flows: dict[str, Flow]) -> None:
        self.flows = flows

    async def ListFlows(self, request, context):  # noqa: N802, ANN001
        return ivr_pb2.ListFlowsReply(flows=[
            ivr_pb2.FlowInfo(dnis=f.dnis, name=f.name, queues=f.queues)
            for f in self.flows.values()])


async def main(settings: IvrSettings, readiness: Readiness) -> Stop:
    flows = load_flows(settings.flows_file)
    log.info("loaded %d flows: %s", len(flows), ", ".join(f"{d}={f.name}" for d, f in flows.items()))
    gateway_channel = rpc.channel(settings.grpc_target("gateway"))
    acd_channel = rpc.channel(settings.grpc_target("acd"))
    runner = FlowRunner(gateway_pb2_grpc.CallControlStub(gateway_channel),
                        acd_pb2_grpc.AcdStub(acd_channel))
    tasks: set[asyncio.Task[str]] = set()

    async def on_event(env: Envelope) -> None:
        if env.WhichOneof("payload") != "call_offered":
            return
        offered = env.call_offered
        if offered.direction == "outbound":          # placed by us: no inbound flow to run
            return
        flow = flows.get(offered.dnis)
        if flow is None:
            log.warning("call %s to %s: no flow for this number", offered.call_id, offered.dnis)
            return
        task = asyncio.create_task(runner.run(flow, offered.call_id, offered.ani, offered.dnis),
                                   name=f"flow-{offered.call_id}")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    consumer = EventConsumer(settings, "ivr", ["calls"], on_event, readiness)
    consumer.start()
    server = rpc.server(settings.bind_host, settings.grpc_ports["ivr"])
    ivr_pb2_grpc.add_IvrServicer_to_server(IvrService(flows), server)
    await server.start()

    async def stop() -> None:
        await server.stop(grace=2)
        await consumer.stop()
        for task in tasks:
            task.cancel()
        await gateway_channel.close()
        await acd_channel.close()

    return stop
