"""The agent's seat in the ACD, driven from the desktop: log in, ready / not ready, log out.

The ACD owns the agent state machine; the CRM only forwards the agent's wish over gRPC and
translates the ACD's refusal into an HTTP status the browser can show.
"""

from __future__ import annotations

from typing import Any

import grpc

from crm.peer_errors import PeerError
from hotline.v1 import acd_pb2, acd_pb2_grpc, events_pb2

#: per-call deadline: the desktop must not hang when the ACD is slow.
TIMEOUT_S = 5.0

REQUESTABLE_STATES = {
    "ready": events_pb2.AGENT_STATE_READY,
    "not_ready": events_pb2.AGENT_STATE_NOT_READY,
}

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def state_name(state: events_pb2.AgentState.ValueType) -> str:
    """`AGENT_STATE_NOT_READY` -> "not_ready"."""
    return events_pb2.AgentState.Name(state).removeprefix("AGENT_STATE_").lower()


def agent_json(agent: acd_pb2.Agent) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        "extension": agent.extension,
        "state": state_name(agent.state),
        "reason": agent.reason,
        "queues": list(agent.queues),
        "call_id": agent.call_id,
        "state_since_ms": agent.state_since_ms,
        "queue": agent.queue,
    }


class AgentControl:
    """Thin, typed front of the `hotline.v1.Acd` stub with HTTP-shaped errors."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = acd_pb2_grpc.AcdStub(channel)

    async def login(self, agent_id: str, extension: str) -> acd_pb2.Agent:
        return await self._agent(
            self._stub.Login,
            acd_pb2.LoginRequest(agent_id=agent_id, extension=extension, queues=[]),
        )

    async def set_state(self, agent_id: str, state: str, reason: str) -> acd_pb2.Agent:
        return await self._agent(
            self._stub.SetState,
            acd_pb2.SetStateRequest(
                agent_id=agent_id, state=REQUESTABLE_STATES[state], reason=reason
            ),
        )

    async def get(self, agent_id: str) -> acd_pb2.Agent:
        return await self._agent(self._stub.GetAgent, acd_pb2.AgentRef(agent_id=agent_id))

    async def logout(self, agent_id: str) -> acd_pb2.Agent:
        return await self._agent(self._stub.Logout, acd_pb2.AgentRef(agent_id=agent_id))

    async def list_agents(self) -> list[acd_pb2.Agent]:
        """Every agent the ACD knows, with presence (the desk's transfer directory)."""
        reply: acd_pb2.ListAgentsReply = await self._call(
            self._stub.ListAgents, acd_pb2.ListAgentsRequest()
        )
        return list(reply.agents)

    async def list_queues(self) -> list[acd_pb2.QueueStatus]:
        reply: acd_pb2.ListQueuesReply = await self._call(
            self._stub.ListQueues, acd_pb2.ListQueuesRequest()
        )
        return list(reply.queues)

    async def _agent(self, method: Any, request: Any) -> acd_pb2.Agent:
        agent: acd_pb2.Agent = await self._call(method, request)
        return agent

    @staticmethod
    async def _call(method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise AcdError(exc.code(), exc.details() or "") from None


class AcdError(PeerError):
    """The ACD said no (or could not be reached); carries the HTTP status for the browser."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__("ACD", code, detail, _HTTP_STATUS, TIMEOUT_S)
