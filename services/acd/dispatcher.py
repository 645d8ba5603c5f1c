"""Matching waiting calls with ready agents, and following each offer to its outcome.

The dispatcher owns the queues and the agent book. It rings one agent per call at a time
through the gateway's ConnectToEndpoint and reacts to the answer: bridged → agent on call;
no answer → agent Not Ready and the call goes to the next agent; caller gone → agent Ready.
Calls that end while waiting are counted abandoned and are never offered again. Every
transition is announced through the `AcdNotifier`, which builds the events.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

import grpc

from acd import kpis
from acd.agents import (
    LOGGED_OUT,
    NOT_READY,
    ON_CALL,
    READY,
    RINGING,
    WRAP_UP,
    Agent,
    AgentBook,
    InvalidTransition,
    State,
)
from acd.notifier import AcdNotifier
from acd.queues import CallQueue, WaitingCall
from acd.routing.strategies import Strategy, longest_idle
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

HOLD_PROMPT = "hold"


class UnknownQueue(KeyError):
    """The queue named in a request is not configured."""


class Dispatcher:
    def __init__(
        self,
        notifier: AcdNotifier,
        gateway: gateway_pb2_grpc.CallControlAsyncStub,
        queues: list[str],
        site: str,
        ring_timeout_s: float,
        wrap_up_s: float,
        strategy: Strategy = longest_idle,
    ) -> None:
        self.notifier, self.gateway, self.site = notifier, gateway, site
        self.ring_timeout_s, self.wrap_up_s, self.strategy = ring_timeout_s, wrap_up_s, strategy
        self.queues: dict[str, CallQueue] = {name: CallQueue(name) for name in queues}
        self.book = AgentBook()
        self.service_level = kpis.ServiceLevel()
        self.answered: dict[str, int] = dict.fromkeys(queues, 0)
        self.abandoned: dict[str, int] = dict.fromkeys(queues, 0)
        self._on_call: dict[str, str] = {}  # call_id -> agent_id
        self._ended: OrderedDict[str, None] = OrderedDict()  # recently ended call ids
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="acd-dispatch")

    async def stop(self) -> None:
        for task in [self._loop_task, *self._tasks]:
            if task:
                task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- calls -------------------------------------------------------------------------
    def queue(self, name: str) -> CallQueue:
        try:
            return self.queues[name]
        except KeyError:
            raise UnknownQueue(
                f"queue {name!r} does not exist (have: {', '.join(sorted(self.queues))})"
            ) from None

    async def enqueue(self, call: WaitingCall) -> int:
        """Put a call in its queue, start hold music, announce it; returns its position."""
        queue = self.queue(call.queue)
        if call.call_id in self._ended:
            raise InvalidTransition(f"call {call.call_id} has already ended")
        if any(c.call_id == call.call_id for q in self.queues.values() for c in q.calls):
            raise InvalidTransition(f"call {call.call_id} is already queued")
        position = queue.add(call)
        kpis.OFFERED.labels(queue.name, self.site).inc()
        await self.notifier.call_queued(call, position)
        self._spawn(self._hold_music(call.call_id), f"hold-{call.call_id}")
        self._wakeup.set()
        return position

    async def _hold_music(self, call_id: str) -> None:
        try:
            await self.gateway.Play(gw.PlayRequest(call_id=call_id, prompt=HOLD_PROMPT, loop=True))
        except grpc.aio.AioRpcError as exc:
            log.warning("hold music for %s failed: %s", call_id, exc.details())

    async def call_ended(self, call_id: str, reason: int) -> None:
        """A call ended (from the gateway's CallEnded): abandon it or start the agent's wrap-up."""
        self._ended[call_id] = None
        if len(self._ended) > 10_000:
            self._ended.popitem(last=False)
        for queue in self.queues.values():
            call = queue.remove(call_id)
            if call is not None:
                waited = call.waited()
                self.abandoned[queue.name] += 1
                kpis.ABANDONED.labels(queue.name, self.site).inc()
                self.service_level.record(queue.name, False)
                log.info("call %s abandoned in %s after %.1fs", call_id, queue.name, waited)
                await self.notifier.call_abandoned(call_id, queue.name, waited)
                return
        agent_id = self._on_call.pop(call_id, None)
        if agent_id is not None:
            agent = self.book.agents.get(agent_id)
            if agent is not None and agent.state == ON_CALL and agent.call_id == call_id:
                await self._move(agent, WRAP_UP, "call ended", call_id)
                self._spawn(self._wrap_up(agent, call_id), f"wrap-{agent_id}")

    async def _wrap_up(self, agent: Agent, call_id: str) -> None:
        await asyncio.sleep(self.wrap_up_s)
        if agent.state == WRAP_UP and agent.call_id == call_id:
            await self._move(agent, READY, "wrap-up timer")

    # ---- agents ------------------------------------------------------------------------
    async def _move(self, agent: Agent, state: State, reason: str = "", call_id: str = "") -> None:
        previous = self.book.transition(agent, state, reason, call_id)
        await self.notifier.agent_state_changed(agent, previous)
        if state == READY:
            self._wakeup.set()

    async def login(
        self, agent_id: str, extension: str, queues: frozenset[str], skills: frozenset[str]
    ) -> Agent:
        for name in queues:
            self.queue(name)
        agent, previous = self.book.login(agent_id, extension, queues, skills)
        await self.notifier.agent_state_changed(agent, previous)
        return agent

    async def logout(self, agent_id: str) -> Agent:
        agent = self.book.get(agent_id)
        await self._move(agent, LOGGED_OUT, "logout")
        return agent

    async def set_state(self, agent_id: str, state: State, reason: str) -> Agent:
        agent = self.book.get(agent_id)
        await self._move(agent, state, reason)
        return agent

    # ---- matching ----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._match()
            except Exception:
                log.exception("dispatch round failed")

    async def _match(self) -> None:
        for queue in self.queues.values():
            while True:
                call = queue.next_unoffered()
                if call is None:
                    break
                agent = self.strategy(call, self.book.ready_for(queue.name))
                if agent is None:
                    break
                call.offering = True
                call.attempts += 1
                await self._move(agent, RINGING, f"offered {queue.name}", call.call_id)
                self._spawn(self._offer(queue, call, agent), f"offer-{call.call_id}")

    async def _offer(self, queue: CallQueue, call: WaitingCall, agent: Agent) -> None:
        await self.notifier.agent_offered(queue.name, call, agent, call.waited())
        try:
            reply = await self.gateway.ConnectToEndpoint(
                gw.ConnectRequest(
                    call_id=call.call_id,
                    endpoint=agent.extension,
                    agent_id=agent.agent_id,
                    queue=queue.name,
                    ring_timeout_ms=int(self.ring_timeout_s * 1000),
                )
            )
            result, detail = reply.result, reply.detail
        except grpc.aio.AioRpcError as exc:
            result, detail = gw.CONNECT_RESULT_UNREACHABLE, f"gateway: {exc.details()}"
        log.info(
            "offer of %s to %s: %s %s",
            call.call_id,
            agent.agent_id,
            gw.ConnectResult.Name(result),
            detail,
        )
        if result == gw.CONNECT_RESULT_ANSWERED:
            # A caller who hung up while the phone was answered was already counted abandoned.
            if queue.remove(call.call_id) is not None:
                waited = call.waited()
                self.answered[queue.name] += 1
                kpis.ANSWERED.labels(queue.name, self.site).inc()
                kpis.WAIT.labels(queue.name, self.site).observe(waited)
                self.service_level.record(queue.name, waited <= self.service_level.threshold_s)
            self._on_call[call.call_id] = agent.agent_id
            await self._move(agent, ON_CALL, "answered", call.call_id)
            if call.call_id in self._ended:  # hung up before we heard of the answer
                await self.call_ended(call.call_id, 0)
        elif result == gw.CONNECT_RESULT_CALLER_GONE or call.call_id in self._ended:
            if agent.state == RINGING:
                await self._move(agent, READY, "caller gone")
        else:
            call.offering = False
            kpis.NO_ANSWER.labels(queue.name, self.site).inc()
            reason = (
                "no-answer"
                if result == gw.CONNECT_RESULT_NO_ANSWER
                else gw.ConnectResult.Name(result).removeprefix("CONNECT_RESULT_").lower()
            )
            if agent.state == RINGING:
                await self._move(agent, NOT_READY, reason)
            self._hold_again(call)
        self._wakeup.set()

    def _hold_again(self, call: WaitingCall) -> None:
        if call.call_id not in self._ended:
            self._spawn(self._hold_music(call.call_id), f"hold-{call.call_id}")
