"""The IVR's gRPC servicer: `hotline.v1.Ivr`, which lists the loaded call flows."""

from __future__ import annotations

from common.rpc import Context, callers
from hotline.v1 import ivr_pb2, ivr_pb2_grpc
from ivr.flows import Flow


class IvrService(ivr_pb2_grpc.IvrServicer):
    #: who may call what (enforced by common.rpc): the CRM (its admin pages list the flows).
    CALLERS = callers("hotline.v1.Ivr", {"ListFlows": {"crm"}})

    def __init__(self, flows: dict[str, Flow]) -> None:
        self.flows = flows

    async def ListFlows(
        self, request: ivr_pb2.ListFlowsRequest, context: Context
    ) -> ivr_pb2.ListFlowsReply:
        return ivr_pb2.ListFlowsReply(
            flows=[
                ivr_pb2.FlowInfo(dnis=f.dnis, name=f.name, queues=f.queues)
                for f in self.flows.values()
            ]
        )
