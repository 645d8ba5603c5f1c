"""The ACD's gRPC servicer: `hotline.v1.Acd` over the dispatcher, with errors that say what was
wrong."""

from __future__ import annotations

import time
from typing import Any, NoReturn

import grpc

from acd.agents import REQUESTABLE, Agent, InvalidTransition, UnknownAgent, state_name
from acd.dispatcher import Dispatcher, UnknownQueue
from acd.queues import WaitingCall
from common import tracing
from common.lease import Fenced
from common.rpc import Context, callers
from hotline.v1 import acd_pb2, acd_pb2_grpc


def agent_reply(agent: Agent) -> acd_pb2.Agent:
    return acd_pb2.Agent(
        agent_id=agent.agent_id,
        extension=agent.extension,
        state=agent.state,
        reason=agent.reason,
        queues=sorted(agent.queues),
        call_id=agent.call_id,
        state_since_ms=int(agent.since_wall * 1000),
    )


class AcdService(acd_pb2_grpc.AcdServicer):
    #: who may call what (enforced by common.rpc): the IVR queues calls; the CRM drives the
    #: agents' seats for the desktop; both may read a queue.
    CALLERS = callers(
        "hotline.v1.Acd",
        {
            "Enqueue": {"ivr"},
            "Login": {"crm"},
            "Logout": {"crm"},
            "SetState": {"crm"},
            "GetAgent": {"crm"},
            "GetQueue": {"crm", "ivr"},
            # the desk's transfer directory and the supervisor board (issue 10)
            "ListAgents": {"crm"},
            "ListQueues": {"crm"},
            "Requeue": {"gateway"},
            "ListAgents": {"crm"},
            "ListQueues": {"crm"},
        },
    )

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher

    @staticmethod
    async def _fail(context: Context, exc: Exception) -> NoReturn:
        code = {
            InvalidTransition: grpc.StatusCode.FAILED_PRECONDITION,
            UnknownAgent: grpc.StatusCode.NOT_FOUND,
            UnknownQueue: grpc.StatusCode.NOT_FOUND,
            Fenced: grpc.StatusCode.UNAVAILABLE,  # no longer the active replica: try another
        }.get(type(exc), grpc.StatusCode.INTERNAL)
        await context.abort(code, exc.args[0] if exc.args else str(exc))
        raise AssertionError("abort returned")  # grpc's abort always raises

    async def Enqueue(
        self, request: acd_pb2.EnqueueRequest, context: Context
    ) -> acd_pb2.EnqueueReply:
        if not request.call_id or not request.queue:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call_id and queue are required")
        call = WaitingCall(
            request.call_id,
            request.queue,
            request.priority,
            request.ani,
            request.dnis,
            frozenset(request.skills),
            dict(request.data),
            trace=tracing.inject(),  # the IVR's Enqueue, within the call's trace
        )
        try:
            position = await self.d.enqueue(call)
        except (UnknownQueue, InvalidTransition, Fenced) as exc:
            await self._fail(context, exc)
        return acd_pb2.EnqueueReply(call_id=request.call_id, queue=request.queue, position=position)

    async def Login(self, request: acd_pb2.LoginRequest, context: Context) -> acd_pb2.Agent:
        if not request.agent_id or not request.extension:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "agent_id and extension are required"
            )
        try:
            agent = await self.d.login(
                request.agent_id,
                request.extension,
                frozenset(request.queues),
                frozenset(request.skills),
            )
        except (UnknownQueue, InvalidTransition, Fenced) as exc:
            await self._fail(context, exc)
        return agent_reply(agent)

    async def Logout(self, request: acd_pb2.AgentRef, context: Context) -> acd_pb2.Agent:
        try:
            return agent_reply(await self.d.logout(request.agent_id))
        except (UnknownAgent, InvalidTransition, Fenced) as exc:
            await self._fail(context, exc)

    async def SetState(self, request: acd_pb2.SetStateRequest, context: Context) -> acd_pb2.Agent:
        if request.state not in REQUESTABLE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"an agent may only ask for ready or not_ready, not {state_name(request.state)}",
            )
        try:
            return agent_reply(
                await self.d.set_state(request.agent_id, request.state, request.reason)
            )
        except (UnknownAgent, InvalidTransition, Fenced) as exc:
            await self._fail(context, exc)

    async def GetAgent(self, request: acd_pb2.AgentRef, context: Context) -> acd_pb2.Agent:
        try:
            return agent_reply(self.d.book.get(request.agent_id))
        except UnknownAgent as exc:
            await self._fail(context, exc)

    async def GetQueue(self, request: acd_pb2.QueueRef, context: Context) -> acd_pb2.QueueStatus:
        try:
            queue = self.d.queue(request.queue)
        except UnknownQueue as exc:
            await self._fail(context, exc)
        now = time.monotonic()
        agents = [a for a in self.d.book.agents.values() if a.serves(queue.name)]
        by_state: dict[str, int] = {}
        for agent in agents:
            by_state[state_name(agent.state)] = by_state.get(state_name(agent.state), 0) + 1
        return acd_pb2.QueueStatus(
            queue=queue.name,
            oldest_wait_ms=int(queue.oldest_wait(now) * 1000),
            calls=[
                acd_pb2.QueuedCall(
                    call_id=c.call_id,
                    ani=c.ani,
                    priority=c.priority,
                    waited_ms=int(c.waited(now) * 1000),
                )
                for c in queue.calls
            ],
            agents_by_state=by_state,
            answered=self.d.answered[queue.name],
            abandoned=self.d.abandoned[queue.name],
        )

    # Contract first (issue 10); answered UNIMPLEMENTED until built.

    async def Requeue(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Requeue is not implemented yet")

    async def ListAgents(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ListAgents is not implemented yet")

    async def ListQueues(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ListQueues is not implemented yet")
