"""Matching waiting calls with ready agents, and following each offer to its outcome.

The dispatcher owns the queues and the agent book. It rings one agent per call at a time
through the gateway's ConnectToEndpoint and reacts to the answer: bridged → agent on call;
no answer → agent Not Ready and the call goes to the next agent; caller gone → agent Ready.
Calls that end while waiting are counted abandoned and are never offered again. Every
transition is announced through the `AcdNotifier`, which builds the events.

It also follows what agents do in a call (the gateway's call-control events): a transfer frees
the transferring agent to wrap-up and puts the agent at the target extension on the call; a
call sent back to a queue (`requeue`) waits again with its data, skills and priority; a
click-to-dial call puts its agent on the call; hold is counted, not a state. Leaving a call and
leaving wrap-up are where handle time is observed (talk, hold, after-call work).

After a restart the dispatcher starts from a `rebuild.Plan` (`restore`), and keeps checking
its calls against the gateway's live calls (`reconcile`), so a call end it never heard of
cannot leave a caller waiting or an agent on a call for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Coroutine
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
    state_name,
)
from acd.notifier import AcdNotifier
from acd.queues import CallQueue, WaitingCall
from acd.rebuild import Outcome, Plan
from acd.routing.strategies import Strategy, longest_idle
from common import error_info, tracing
from common.recent_ids import RecentIds
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)

HOLD_PROMPT = "hold"
#: the reason of an agent put on a call by a transfer (their part starts mid-call)
TRANSFERRED_IN = "transferred in"
#: the reason of an agent on a call because a colleague on it consults them
CONSULTED = "consulted"
#: ended call ids remembered, so a late enqueue, answer or transfer of one is refused
ENDED_MEMORY = 10_000
#: first and longest pause before offering again a call whose offer the gateway could not make
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 8.0
#: gRPC codes meaning the gateway did not try the agent's endpoint (not the agent's fault)
GATEWAY_TROUBLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class UnknownQueue(KeyError):
    """The queue named in a request is not configured."""


class UnknownCall(KeyError):
    """The call named in a request is not one this ACD has on an agent."""


class AlreadyQueued(InvalidTransition):
    """The call is in a queue already: an Enqueue asked again (the IVR retries one whose
    answer it lost), told apart so the asker knows its call is queued."""


def _no_fence() -> None:
    return None


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
        fence: Callable[[], None] = _no_fence,
        short_abandon_s: float = 5.0,
    ) -> None:
        self.notifier, self.gateway, self.site = notifier, gateway, site
        self.ring_timeout_s, self.wrap_up_s, self.strategy = ring_timeout_s, wrap_up_s, strategy
        #: a caller who hangs up sooner than this while waiting is a short abandon
        self.short_abandon_s = short_abandon_s
        #: raises when this replica may no longer act (it lost its lease): checked before
        #: every command to the gateway and every state change
        self.fence = fence
        self.queues: dict[str, CallQueue] = {name: CallQueue(name) for name in queues}
        self.book = AgentBook()
        self.window = kpis.QueueWindow()
        kpis.zero(queues, site)
        self.answered: dict[str, int] = dict.fromkeys(queues, 0)
        self.abandoned: dict[str, int] = dict.fromkeys(queues, 0)
        self._on_call: dict[str, str] = {}  # call_id -> agent_id
        #: calls on agents, as they waited (queue, priority, skills, data): what a requeue keeps
        self._calls: dict[str, WaitingCall] = {}
        #: call id -> the agent an agent on the call is consulting (their phone is busy too)
        self._consults: dict[str, str] = {}
        self._ended = RecentIds(ENDED_MEMORY)  # recently ended call ids
        #: calls the last reconcile found gone at the gateway: ended if the next finds them
        #: gone too (their CallEnded is late, not lost, while the consumer lags behind)
        self._missing: set[str] = set()
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

    def _find(self, call_id: str) -> tuple[CallQueue, WaitingCall] | None:
        for queue in self.queues.values():
            for call in queue.calls:
                if call.call_id == call_id:
                    return queue, call
        return None

    async def enqueue(self, call: WaitingCall) -> int:
        """Put a call in its queue, start hold music, announce it; returns its position."""
        queue = self.queue(call.queue)
        if call.call_id in self._ended:
            raise InvalidTransition(f"call {call.call_id} has already ended")
        if self._find(call.call_id) is not None:
            raise AlreadyQueued(f"call {call.call_id} is already queued")
        self.fence()
        position = queue.add(call)
        kpis.OFFERED.labels(queue.name, self.site).inc()
        await self.notifier.call_queued(call, position)
        self._spawn(self._hold_music(call.call_id), f"hold-{call.call_id}")
        self._wakeup.set()
        return position

    async def _hold_music(self, call_id: str) -> None:
        """Loop the hold prompt to a waiting call (and while its offer rings). A call answered
        before the prompt reached the gateway is bridged there and refuses it (under load, one
        call in ten the bench makes at 40/s), so only a call still waiting, with no offer out,
        is worth a warning; a prompt the gateway does not have is an error whatever the call
        did meanwhile."""
        try:
            self.fence()
            if self._find(call_id) is None:  # answered or gone before the music started
                return
            await self.gateway.Play(gw.PlayRequest(call_id=call_id, prompt=HOLD_PROMPT, loop=True))
        except grpc.aio.AioRpcError as exc:
            found = self._find(call_id)
            waiting = found is not None and not found[1].offering  # an offer may have answered
            missing = error_info.reason_of(exc) == error_info.PROMPT_NOT_FOUND  # misconfigured
            log.log(
                logging.ERROR if missing else logging.WARNING if waiting else logging.DEBUG,
                "hold music for %s failed: %s%s",
                call_id,
                exc.details(),
                "" if waiting else " (it was answered or has left its queue)",
            )

    async def call_ended(self, call_id: str, reason: int, hold_ms: int = 0) -> None:
        """A call ended (from the gateway's CallEnded): abandon it or start the agent's wrap-up
        (`hold_ms`: the call's time on hold, all holds together)."""
        self._ended.add(call_id)
        found = self._find(call_id)
        if found is not None:
            queue, call = found
            queue.remove(call_id)
            await self._abandon(queue.name, call_id, call.waited())
            return
        self._calls.pop(call_id, None)
        await self.consult_ended(call_id, "ended")
        agent_id = self._on_call.pop(call_id, None)
        if agent_id is not None:
            agent = self.book.agents.get(agent_id)
            if agent is not None and agent.state == ON_CALL and agent.call_id == call_id:
                # the call's hold is all theirs unless they joined it midway
                if hold_ms and agent.reason not in (TRANSFERRED_IN, CONSULTED):
                    agent.hold_s = max(agent.hold_total(time.monotonic()), hold_ms / 1000)
                    agent.held_since = None
                await self._release(agent, "call ended")

    async def _release(self, agent: Agent, reason: str) -> None:
        """The agent's part of their call is over: wrap-up, then Ready after the timer."""
        call_id = agent.call_id
        await self._move(agent, WRAP_UP, reason, call_id)
        self._spawn(self._wrap_up(agent, call_id, self.wrap_up_s), f"wrap-{agent.agent_id}")

    async def _abandon(self, queue: str, call_id: str, waited: float) -> None:
        self.abandoned[queue] += 1
        kpis.ABANDONED.labels(queue, self.site).inc()
        short = waited < self.short_abandon_s
        kpis.CONTACTS.labels(queue, self.site, "short_abandoned" if short else "abandoned").inc()
        self.window.record(queue, False, waited)
        log.info("call %s abandoned in %s after %.1fs", call_id, queue, waited)
        await self.notifier.call_abandoned(call_id, queue, waited)

    async def _answered(
        self, call: WaitingCall, agent_id: str, waited: float, *, wait: bool = True
    ) -> None:
        """Count and announce that `call`, taken out of its queue, was answered by `agent_id`
        (with `wait`, return once the broker has it)."""
        if call.queue in self.queues:
            self.answered[call.queue] += 1
            kpis.ANSWERED.labels(call.queue, self.site).inc()
            kpis.WAIT.labels(call.queue, self.site).observe(waited)
            kpis.CONTACTS.labels(call.queue, self.site, "answered").inc()
            self.window.record(call.queue, True, waited)
        published = self.notifier.call_dequeued(call, agent_id, waited)
        if wait:
            await published

    async def _wrap_up(self, agent: Agent, call_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if agent.state == WRAP_UP and agent.call_id == call_id:
            await self._move(agent, READY, "wrap-up timer")

    # ---- in the call: transfers, requeue, calls of the agent's own, hold ----------------
    async def requeue(self, call_id: str, queue_name: str, from_agent_id: str = "") -> int:
        """An answered call goes back to a queue (a transfer to a queue) with the priority,
        skills and data it had; its agent goes to wrap-up. Returns the call's position."""
        queue = self.queue(queue_name)
        if call_id in self._ended:
            raise InvalidTransition(f"call {call_id} has already ended")
        if self._find(call_id) is not None:
            raise InvalidTransition(f"call {call_id} is already queued")
        agent_id = self._on_call.get(call_id)
        if agent_id is None:
            raise UnknownCall(f"call {call_id} is not on an agent of this ACD: nothing to requeue")
        if from_agent_id and from_agent_id != agent_id:
            raise InvalidTransition(f"call {call_id} is on agent {agent_id}, not {from_agent_id}")
        self.fence()
        had = self._calls.pop(call_id, None)
        del self._on_call[call_id]
        call = WaitingCall(
            call_id,
            queue.name,
            had.priority if had else 0,
            had.ani if had else "",
            had.dnis if had else "",
            had.skills if had else frozenset(),
            dict(had.data) if had else {},
        )
        agent = self.book.agents.get(agent_id)
        if agent is not None and agent.state == ON_CALL and agent.call_id == call_id:
            await self._release(agent, f"transferred to queue {queue.name}")
        return await self.enqueue(call)

    async def call_transferred(
        self, call_id: str, from_agent_id: str, target_kind: str, target: str, to_agent_id: str
    ) -> None:
        """The gateway moved a call from one party to another (CallTransferred): the agent who
        transferred wraps up; an agent at the target extension is now on the call."""
        if call_id in self._ended:
            return
        had = self._calls.get(call_id)
        source = self.book.agents.get(from_agent_id) if from_agent_id else None
        if source is None and self._on_call.get(call_id):
            source = self.book.agents.get(self._on_call[call_id])
        if source is not None and source.state == ON_CALL and source.call_id == call_id:
            if self._on_call.get(call_id) == source.agent_id:
                del self._on_call[call_id]
            await self._release(source, f"transferred to {target_kind} {target}".strip())
        if target_kind == "queue":
            return  # back through Requeue: the queue has the call now
        agent = self.book.agents.get(to_agent_id) if to_agent_id else None
        if agent is None and target_kind == "extension":
            agent = self.book.by_extension(target)
        if agent is not None:
            await self._on_a_call(agent, call_id, had.queue if had else "", TRANSFERRED_IN)

    async def call_bridged(self, call_id: str, agent_id: str, queue: str) -> None:
        """A call was bridged to an agent (CallBridged). The ACD's own offers are followed
        through ConnectToEndpoint; this catches the others (the agent's click-to-dial)."""
        agent = self.book.agents.get(agent_id)
        if agent is None or call_id in self._ended:
            return
        if agent.call_id == call_id and agent.state in (RINGING, ON_CALL):
            return  # our own offer (its answer is handled by _offer), or already known
        await self._on_a_call(agent, call_id, queue, "outbound" if not queue else "answered")

    async def consult_started(self, call_id: str, target_kind: str, target: str) -> None:
        """An agent on the call consults a colleague (ConsultStarted, once the target answered):
        the consulted agent is on the call too, so they are offered nothing meanwhile."""
        if target_kind != "extension" or call_id in self._ended:
            return
        agent = self.book.by_extension(target)
        if agent is None or self._on_call.get(call_id) == agent.agent_id:
            return
        had = self._calls.get(call_id)
        if await self._seat(agent, call_id, had.queue if had else "", CONSULTED):
            self._consults[call_id] = agent.agent_id

    async def consult_ended(self, call_id: str, outcome: str) -> None:
        """The consult is over (ConsultEnded): completed, the consulted agent takes the call
        (the CallTransferred that follows); cancelled or failed, they wrap up their part."""
        agent_id = self._consults.pop(call_id, None)
        agent = self.book.agents.get(agent_id) if agent_id else None
        if outcome == "completed" or agent is None:
            return
        if agent.state == ON_CALL and agent.call_id == call_id:
            await self._release(agent, f"consult {outcome}")

    async def _on_a_call(self, agent: Agent, call_id: str, queue: str, reason: str) -> None:
        if agent.state == ON_CALL and agent.call_id == call_id:
            self._on_call[call_id] = agent.agent_id  # e.g. the consulted agent takes the call
            self._consults.pop(call_id, None)
            return
        if await self._seat(agent, call_id, queue, reason):
            self._on_call[call_id] = agent.agent_id

    async def _seat(self, agent: Agent, call_id: str, queue: str, reason: str) -> bool:
        """Put an agent on a call the ACD did not offer them; False when their state forbids."""
        if agent.state not in (READY, NOT_READY, WRAP_UP):
            log.warning(
                "agent %s took call %s while %s: state left as it is",
                agent.agent_id,
                call_id,
                state_name(agent.state),
            )
            return False
        await self._move(agent, ON_CALL, reason, call_id, queue)
        return True

    def call_held(self, call_id: str, agent_id: str) -> None:
        """The call is on hold: the agent stays on the call, the hold is counted."""
        agent = self._agent_on(call_id, agent_id)
        if agent is not None and agent.held_since is None:
            agent.held_since = time.monotonic()

    def call_resumed(self, call_id: str, agent_id: str) -> None:
        agent = self._agent_on(call_id, agent_id)
        if agent is not None and agent.held_since is not None:
            agent.hold_s += time.monotonic() - agent.held_since
            agent.held_since = None

    def _agent_on(self, call_id: str, agent_id: str) -> Agent | None:
        agent = self.book.agents.get(agent_id or self._on_call.get(call_id, ""))
        if agent is None or agent.state != ON_CALL or agent.call_id != call_id:
            return None
        return agent

    # ---- agents ------------------------------------------------------------------------
    async def _move(
        self,
        agent: Agent,
        state: State,
        reason: str = "",
        call_id: str = "",
        queue: str | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Move `agent` to `state` and announce it; with `wait`, return once the broker has
        the announcement (without, the caller's next awaited event covers it: the outbox is in
        order)."""
        self.fence()
        now, queue_was, since = time.monotonic(), agent.queue or kpis.DIRECT, agent.since
        hold = agent.hold_total(now)
        previous = self.book.transition(agent, state, reason, call_id, queue)
        if previous == ON_CALL:  # the agent's part of the call is over
            handle = kpis.HANDLE_TIME
            handle.labels(queue_was, self.site, "talk").observe(max(0.0, now - since - hold))
            handle.labels(queue_was, self.site, "hold").observe(hold)
        elif previous == WRAP_UP and state != WRAP_UP:
            kpis.HANDLE_TIME.labels(queue_was, self.site, "wrap_up").observe(now - since)
        published = self.notifier.agent_state_changed(agent, previous)
        if wait:
            await published
        if state == READY:
            self._wakeup.set()

    async def login(
        self, agent_id: str, extension: str, queues: frozenset[str], skills: frozenset[str]
    ) -> Agent:
        for name in queues:
            self.queue(name)
        self.fence()
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
            retry_in = self._next_retry_in()
            try:
                await asyncio.wait_for(self._wakeup.wait(), retry_in)
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self._match()
            except Exception:
                log.exception("dispatch round failed")

    def _next_retry_in(self) -> float | None:
        now = time.monotonic()
        due = [c.retry_at for q in self.queues.values() for c in q.calls if c.retry_at > now]
        return max(0.0, min(due) - now) if due else None

    async def _match(self) -> None:
        now = time.monotonic()
        for queue in self.queues.values():
            while True:
                call = queue.next_unoffered(now)
                if call is None:
                    break
                agent = self.strategy(call, self.book.ready_for(queue.name))
                if agent is None:
                    break
                call.offering = True
                call.attempts += 1
                # not awaited: the offer awaits its AgentOffered, queued after this, before it
                # rings the agent; so the matches of a round and their offers share a batch
                await self._move(
                    agent, RINGING, f"offered {queue.name}", call.call_id, queue.name, wait=False
                )
                self._spawn(self._offer(queue, call, agent), f"offer-{call.call_id}")

    async def _ring(
        self, queue: CallQueue, call: WaitingCall, agent: Agent
    ) -> tuple[gw.ConnectResult.ValueType | None, str]:
        """Ask the gateway to ring `agent` for `call`: (ConnectResult, detail), or
        (None, detail) when the gateway did not try (it is down, or busy with the call)."""
        self.fence()
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
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # the gateway no longer has the call
                return gw.CONNECT_RESULT_CALLER_GONE, f"gateway: {exc.details()}"
            if exc.code() in GATEWAY_TROUBLE:
                return None, f"gateway {exc.code().name}: {exc.details()}"
            return gw.CONNECT_RESULT_UNREACHABLE, f"gateway: {exc.details()}"
        return reply.result, reply.detail

    async def _offer(self, queue: CallQueue, call: WaitingCall, agent: Agent) -> None:
        """Offers `call` to `agent` inside the call's trace, so the gateway's ConnectToEndpoint
        (and what it starts: the bridge, the recording) joins it."""
        with TRACER.start_as_current_span(
            "acd.offer",
            context=tracing.extract(call.trace),
            attributes={"hotline.agent_id": agent.agent_id, "hotline.queue": queue.name},
        ):
            await self._offer_in_trace(queue, call, agent)

    async def _offer_in_trace(self, queue: CallQueue, call: WaitingCall, agent: Agent) -> None:
        await self.notifier.agent_offered(queue.name, call, agent, call.waited())
        result, detail = await self._ring(queue, call, agent)
        log.info(
            "offer of %s to %s: %s %s",
            call.call_id,
            agent.agent_id,
            "NOT_MADE" if result is None else gw.ConnectResult.Name(result),
            detail,
        )
        self.fence()
        if result == gw.CONNECT_RESULT_ANSWERED:
            # A caller who hung up while the phone was answered was already counted abandoned.
            ringing = agent.state == RINGING and agent.call_id == call.call_id
            if queue.remove(call.call_id) is not None:
                # when the agent's ON_CALL follows, one batch with it (awaited, so this too)
                await self._answered(call, agent.agent_id, call.waited(), wait=not ringing)
            self._on_call[call.call_id] = agent.agent_id
            self._calls[call.call_id] = call
            if ringing:
                await self._move(agent, ON_CALL, "answered", call.call_id)
            else:  # a transfer or a call of their own reached their phone first
                log.warning(
                    "agent %s answered %s but is %s with %s",
                    agent.agent_id,
                    call.call_id,
                    state_name(agent.state),
                    agent.call_id or "no call",
                )
            if call.call_id in self._ended:  # hung up before we heard of the answer
                await self.call_ended(call.call_id, 0)
        elif result == gw.CONNECT_RESULT_CALLER_GONE or call.call_id in self._ended:
            if agent.state == RINGING and agent.call_id == call.call_id:
                await self._move(agent, READY, "caller gone")
            if call.call_id not in self._ended:  # the gateway knew before we did
                await self.call_ended(call.call_id, 0)
        elif result is None:
            # The gateway could not try (down, or still busy with an earlier offer of this
            # call): not the agent's fault. The agent keeps their place; the call waits a bit.
            call.offering = False
            call.failures += 1
            call.retry_at = time.monotonic() + min(
                RETRY_MAX_S, RETRY_FIRST_S * 2 ** (call.failures - 1)
            )
            if agent.state == RINGING and agent.call_id == call.call_id:
                await self._move(agent, READY, "offer not made")
        else:
            call.offering = False
            call.failures = 0
            kpis.NO_ANSWER.labels(queue.name, self.site).inc()
            reason = (
                "no-answer"
                if result == gw.CONNECT_RESULT_NO_ANSWER
                else gw.ConnectResult.Name(result).removeprefix("CONNECT_RESULT_").lower()
            )
            if agent.state == RINGING and agent.call_id == call.call_id:
                await self._move(agent, NOT_READY, reason)
            self._hold_again(call)
        self._wakeup.set()

    def _hold_again(self, call: WaitingCall) -> None:
        if call.call_id not in self._ended:
            self._spawn(self._hold_music(call.call_id), f"hold-{call.call_id}")

    # ---- restart and reconciliation ----------------------------------------------------
    async def restore(self, plan: Plan, outcomes: Collection[Outcome] = ()) -> None:
        """Take the state a restart rebuilt (before `start`), announce what the restart found
        out, and resume: hold music again for waiting calls, kept offers rung again."""
        now_ms, now = time.time() * 1000, time.monotonic()
        for outcome in sorted(outcomes, key=lambda o: o.at_ms):  # the window is in time order
            if outcome.queue in self.queues:
                at = now - (now_ms - outcome.at_ms) / 1000
                self.window.record(outcome.queue, outcome.answered, outcome.waited_ms / 1000, at)
        for agent in plan.agents:
            self.book.agents[agent.agent_id] = agent
        for call in plan.waiting:
            self.queues[call.queue].add(call)
        self._on_call.update(plan.on_call)
        self._calls.update(plan.records)
        for agent, previous in plan.changed:
            await self.notifier.agent_state_changed(agent, previous)
        for queued, waited in plan.abandoned:
            self._ended.add(queued.call_id)
            if queued.queue in self.queues:
                await self._abandon(queued.queue, queued.call_id, waited)
            else:
                await self.notifier.call_abandoned(queued.call_id, queued.queue, waited)
        for queued, agent_id, waited in plan.answered:
            call = WaitingCall(
                queued.call_id, queued.queue, queued.priority, queued.ani, queued.dnis
            )
            await self._answered(call, agent_id, waited)
        for queued in plan.orphans:
            log.error(
                "call %s waits in queue %s, which this ACD no longer has: it is not served",
                queued.call_id,
                queued.queue,
            )
        for agent_id, seconds in plan.wrap_ups.items():
            agent = self.book.agents[agent_id]
            self._spawn(self._wrap_up(agent, agent.call_id, seconds), f"wrap-{agent_id}")
        for call in plan.waiting:
            kept = plan.kept_offers.get(call.call_id)
            if kept is None:
                self._spawn(self._hold_music(call.call_id), f"hold-{call.call_id}")
            else:
                queue, agent = self.queues[call.queue], self.book.agents[kept]
                call.attempts += 1
                self._spawn(self._offer(queue, call, agent), f"offer-{call.call_id}")
        log.info(
            "restored %d agents (%d changed), %d waiting calls (%d offers kept), %d on calls; "
            "%d abandoned and %d answered while the ACD was away",
            len(plan.agents),
            len(plan.changed),
            len(plan.waiting),
            len(plan.kept_offers),
            len(plan.on_call),
            len(plan.abandoned),
            len(plan.answered),
        )
        self._wakeup.set()

    async def reconcile(self, live: Collection[str], asked_at: float) -> None:
        """End what the gateway no longer holds: `live` are the ids it listed when asked at
        `asked_at` (monotonic). Only calls waiting, and agents on a call, since before that
        are judged, so a call that arrived during the question is never taken for gone. A
        call is ended here only when two reconciles in a row find it gone: under load the
        ACD's consumer lags behind the gateway by seconds, and the call's own CallEnded (with
        its hold time) then arrives between the two and ends it properly."""
        gone: list[str] = []
        for queue in self.queues.values():
            gone += [
                c.call_id
                for c in queue.calls
                if not c.offering and c.enqueued < asked_at and c.call_id not in live
            ]
        gone += [
            call_id
            for call_id, agent_id in self._on_call.items()
            if call_id not in live
            and (agent := self.book.agents.get(agent_id)) is not None
            and agent.since < asked_at
        ]
        missing, self._missing = self._missing, set(gone)
        for call_id in gone:
            if call_id not in missing:
                continue
            self._missing.discard(call_id)
            log.warning(
                "call %s is gone at the gateway and its end has not reached us since the "
                "last reconcile: ending it here",
                call_id,
            )
            await self.call_ended(call_id, 0)

    async def restate_agents(self) -> None:
        """Announce every agent's snapshot again (the broker lost the `agents` topic)."""
        for agent in list(self.book.agents.values()):
            await self.notifier.agent_state_changed(agent, agent.state, restated=True)

    async def restate_queues(self) -> None:
        """Announce every waiting call again (the broker lost the `queues` topic)."""
        for queue in self.queues.values():
            for position, call in enumerate(list(queue.calls), start=1):
                await self.notifier.call_queued(call, position, restated=True)
