"""The gateway as a client of the ACD: a call transferred to a queue goes back to it
(`Acd.Requeue`, over the gateway's mTLS channel to the ACD, as the IVR's Enqueue does)."""

from __future__ import annotations

import logging

import grpc

from hotline.v1 import acd_pb2, acd_pb2_grpc

__all__ = ["GrpcAcdLink"]

log = logging.getLogger(__name__)

REQUEUE_TIMEOUT_S = 5.0


class GrpcAcdLink:
    """The core's AcdLink over gRPC."""

    def __init__(
        self, stub: acd_pb2_grpc.AcdAsyncStub, timeout_s: float = REQUEUE_TIMEOUT_S
    ) -> None:
        self.stub, self.timeout_s = stub, timeout_s

    async def requeue(self, call_id: str, queue: str, from_agent_id: str) -> str:
        """ "" once the ACD has the call in ``queue``, else what the ACD (or the network) said."""
        try:
            reply = await self.stub.Requeue(
                acd_pb2.RequeueRequest(call_id=call_id, queue=queue, from_agent_id=from_agent_id),
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("Requeue of %s to %s failed: %s", call_id, queue, exc.details())
            return f"the ACD refused ({exc.code().name}): {exc.details()}"
        log.info("call %s requeued to %s at position %d", call_id, queue, reply.position)
        return ""
