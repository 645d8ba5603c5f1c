"""The ACD's gRPC servicer: `hotline.v1.Acd` over the dispatcher, with errors that say what was
wrong."""

from __future__ import annotations

from typing import NoReturn

import grpc

from acd.agents import REQUESTABLE, InvalidTransition, UnknownAgent, state_name
from acd.dispatcher import AlreadyQueued, Dispatcher, UnknownCall, UnknownQueue
from acd.queues import WaitingCall
from acd.snapshots import agent_reply, queue_status
from common import tracing
from common.lease import Fenced
from common.rpc import Context, callers
from hotline.v1 import acd_pb2, acd_pb2_grpc


class AcdService(acd_pb2_grpc.AcdServicer):
    #: who may call what (enforced by common.rpc): the IVR queues calls; the CRM drives the
    #: agents' seats for the desktop and reads the board; both may read a queue; the gateway
    #: sends a call an agent transferred to a queue back through it.
    CALLERS = callers(
        "hotline.v1.Acd",
        {
            "Enqueue": {"ivr"},
            "Login": {"crm"},
            "Logout": {"crm"},
            "SetState": {"crm"},
            "GetAgent": {"crm"},
            "GetQueue": {"crm", "ivr"},
            "Requeue": {"gateway"},
            # the supervisor board and the desk's transfer directory (issue 10)
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
            AlreadyQueued: grpc.StatusCode.ALREADY_EXISTS,
            UnknownAgent: grpc.StatusCode.NOT_FOUND,
            UnknownQueue: grpc.StatusCode.NOT_FOUND,
            UnknownCall: grpc.StatusCode.NOT_FOUND,
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
        return self._status(queue.name)

    def _status(self, name: str) -> acd_pb2.QueueStatus:
        d = self.d
        return queue_status(d.queues[name], d.book, d.window, d.answered[name], d.abandoned[name])

    async def Requeue(
        self, request: acd_pb2.RequeueRequest, context: Context
    ) -> acd_pb2.EnqueueReply:
        if not request.call_id or not request.queue:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call_id and queue are required")
        try:
            position = await self.d.requeue(request.call_id, request.queue, request.from_agent_id)
        except (UnknownQueue, UnknownCall, InvalidTransition, Fenced) as exc:
            await self._fail(context, exc)
        return acd_pb2.EnqueueReply(call_id=request.call_id, queue=request.queue, position=position)

    async def ListAgents(
        self, request: acd_pb2.ListAgentsRequest, context: Context
    ) -> acd_pb2.ListAgentsReply:
        agents = sorted(self.d.book.agents.values(), key=lambda a: a.agent_id)
        return acd_pb2.ListAgentsReply(agents=[agent_reply(a) for a in agents])

    async def ListQueues(
        self, request: acd_pb2.ListQueuesRequest, context: Context
    ) -> acd_pb2.ListQueuesReply:
        return acd_pb2.ListQueuesReply(queues=[self._status(name) for name in self.d.queues])
