"""Call logic: offering, answering, prompts, digits, ringing endpoints, bridging, ending.

The switch owns every live call. Channels tell it what the network did through the
:class:`~gateway.core.contracts.CallSink` calls (`offer`, `leg_released`); the gRPC
CallControl servicer tells it what the IVR and ACD want; it asks a leg's channel to ring,
answer, reject or hang up through the leg's Signalling, and announces every fact through
its notifier. It never speaks a channel's protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Mapping
from functools import partial
from typing import Any, Protocol

from opentelemetry import trace
from prometheus_client import Counter, Gauge

from common import tracing
from gateway.core.calls import Call, CallGone, CallRegistry, CallState, CommandError, EndReason
from gateway.core.contracts import (
    AcdLink,
    Attempt,
    CallerParty,
    CallJournal,
    EndpointDialer,
    Leg,
    Offer,
    Originator,
    Outcome,
    Recorder,
    Release,
)
from gateway.core.control import Control
from gateway.core.parties import MOH, hearing, is_plain
from gateway.core.prompts import PromptLibrary
from gateway.core.steps import Step
from gateway.media.bridge import Bridge
from gateway.media.clock import FrameClock
from gateway.media.prompts import PromptPlayer
from gateway.media.room import Room

__all__ = ["CallEvents", "CommandError", "Switch"]

log = logging.getLogger(__name__)
TRACER = trace.get_tracer("hotline.gateway")

#: counted when scraped (a pass over the live calls per scrape), not at every state change:
#: a pass per change cost O(live calls) on the call path (4 % of the gateway at 580 live calls)
ACTIVE = Gauge("hotline_active_calls", "Live calls by state", ["state", "site"])
DRAINING = Gauge(
    "hotline_gateway_draining",
    "1 while the gateway refuses new calls and lets live ones end",
    ["site"],
)
CALLS = Counter("hotline_gateway_calls_total", "Calls by how they ended", ["reason", "site"])

ANSWER_TIMEOUT_S = 60.0


class CallEvents(Protocol):
    """The facts the switch announces (built and published by the gateway's notifier)."""

    def offered(self, call: Call) -> None: ...

    def answered(self, call: Call) -> None: ...

    def bridged(self, call: Call, leg_id: str, endpoint: str) -> None: ...

    def ended(
        self, call: Call, reason: EndReason, detail: str, duration_ms: int, talk_ms: int
    ) -> None: ...

    def step(self, call: Call, step: Step) -> None:
        """A call-control step (hold, transfer, conference...: gateway.core.steps)."""
        ...


class Switch:
    """The channel-neutral call core; also the CallSink every channel reports to."""

    def __init__(
        self,
        *,
        site: str,
        events: CallEvents,
        clock: FrameClock,
        prompts: PromptLibrary,
        endpoints: EndpointDialer | None,
        trunks: Mapping[str, Originator],
        recorder: Recorder | None,
        journal: CallJournal | None = None,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        acd: AcdLink | None = None,
        hold_prompt: str = "hold",
        number_trunk: str = "analog",
        refer_timeout_s: float = 30.0,
    ) -> None:
        self.site, self.events, self.clock, self.prompts = site, events, clock, prompts
        self.endpoints, self.trunks, self.recorder = endpoints, dict(trunks), recorder
        self.journal, self.acd = journal, acd
        self.hold_prompt, self.number_trunk = hold_prompt, number_trunk
        self.refer_timeout_s = refer_timeout_s
        self.control = Control(self)
        self.answer_timeout_s = answer_timeout_s
        self.registry = CallRegistry()
        self.draining = False
        DRAINING.labels(site).set(0)
        self._playing: set[Call] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: the answer timeout of each offered call, by call id: cancelled once the call is
        #: answered or ends, so that a finished call is not kept alive until it would fire
        self._answer_timers: dict[str, asyncio.TimerHandle] = {}
        self._clock_handle = clock.subscribe(self._tick)
        for state in CallState:
            if state is not CallState.ENDED:  # a switch made later (tests) takes the series over
                ACTIVE.labels(state.value, site).set_function(partial(self.registry.count, state))

    # ---- plumbing ----------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def accepting(self) -> bool:
        return not self.draining

    async def drain(self, budget_s: float) -> None:
        """Refuse new calls from now on and wait (up to `budget_s`) for the live ones to end."""
        self.draining = True
        DRAINING.labels(self.site).set(1)
        log.info(
            "draining: %d live calls, waiting up to %.0fs", len(self.registry.live()), budget_s
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        while self.registry.live() and loop.time() < deadline:
            await asyncio.sleep(0.25)
        left = len(self.registry.live())
        if left:
            log.warning("drain ended with %d calls still live; they are released now", left)
        else:
            log.info("drained: no live calls")

    async def stop(self) -> None:
        """End every live call (their channels hang up) and stop the switch's tasks."""
        for call in self.registry.live():
            self.end(call, EndReason.SYSTEM, "gateway stopping")
        await asyncio.sleep(0.2)
        self.clock.unsubscribe(self._clock_handle)
        for handle in self._answer_timers.values():
            handle.cancel()
        self._answer_timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- CallSink: what channels report ---------------------------------------------------
    def offer(self, leg: Leg, offer: Offer) -> str:
        """A new call on any channel: track it and announce CallOffered. An inbound call rings
        and waits for Answer; an outbound one (Originate) is already up."""
        call = Call(
            call_id=str(uuid.uuid4()),
            ani=offer.ani,
            dnis=offer.dnis,
            trunk=offer.trunk,
            channel=offer.channel,
            caller=leg,
            caller_name=offer.caller_name,
            line=offer.line,
            outbound=offer.outbound,
            diverted_from=offer.diverted_from,
        )
        with TRACER.start_as_current_span(
            "call",
            kind=trace.SpanKind.SERVER,
            attributes={
                "hotline.call_id": call.call_id,
                "hotline.channel": call.channel,
                "hotline.dnis": call.dnis,
            },
        ):  # the root of the call's trace: every event and command about it joins it
            call.trace = tracing.inject()
        leg.media.on_dtmf = lambda digit, c=call: self._digit(c, digit)
        self.registry.add(call)
        if self.journal is not None:
            self.journal.call_started(call.call_id, call.offered_wall, call.channel, call.line)
        self.events.offered(call)
        if offer.outbound:
            call.state, call.answered_at = CallState.ANSWERED, time.monotonic()
            self.events.answered(call)
        else:
            leg.signalling.ring(leg)
            self._answer_timers[call.call_id] = asyncio.get_running_loop().call_later(
                self.answer_timeout_s, self._answer_timeout, call.call_id
            )
        return call.call_id

    def leg_released(self, leg: Leg, why: Release, detail: str) -> None:
        """The far end of a leg went away: the call ends, and every other leg is released."""
        call = self.registry.call_of(leg)
        if call is None or call.state == CallState.ENDED:
            return
        if leg not in call.legs():
            return  # a leg the call let go of (transferred away)
        if leg is not call.caller and self.control.party_left(call, leg):
            return
        if why is Release.FAR_END:
            reason = EndReason.FAR_END
        elif why is Release.TIMEOUT:
            reason = EndReason.TIMEOUT
        elif leg is call.caller:
            reason = EndReason.CALLER_HANGUP
        else:
            reason = EndReason.AGENT_HANGUP
        self.end(call, reason, detail, by=leg)

    def leg_held(self, leg: Leg, held: bool) -> None:
        self.control.phone_hold(leg, held)

    async def refer(self, leg: Leg, kind: str, target: str, replaces: str) -> Attempt:
        return await self.control.refer(leg, kind, target, replaces)

    def _answer_timeout(self, call_id: str) -> None:
        self._answer_timers.pop(call_id, None)
        try:
            call = self.registry.get(call_id)
        except CallGone:
            return
        if call.state == CallState.OFFERED:
            log.warning("call %s was never answered by the IVR; releasing", call.call_id)
            self.end(call, EndReason.TIMEOUT, "not answered in time")

    def _digit(self, call: Call, digit: str) -> None:
        call.digits.append(digit)
        call.digit_arrived.set()
        if call.barge_in and call.player is not None:
            self._stop_player(call, completed=False)

    # ---- commands ----------------------------------------------------------------------
    def answer(self, call_id: str, flow_owner: str = "") -> Call:
        """Answer the call (twice is harmless); `flow_owner`: the IVR instance whose flow has
        it now (Call.flow_owner)."""
        call = self.registry.get(call_id)
        if flow_owner:
            call.flow_owner = flow_owner
        if call.state != CallState.OFFERED:
            return call  # answering twice is harmless
        self._cancel_answer_timer(call_id)
        call.caller.signalling.answer(call.caller)
        call.state = CallState.ANSWERED
        call.answered_at = time.monotonic()
        self.events.answered(call)
        return call

    async def originate(
        self, trunk: str, number: str, policy: str, timeout_s: float, diverted_from: str = ""
    ) -> tuple[Attempt, Call | None]:
        """Place an outbound call on a trunk; the new call is answered when the attempt is."""
        originator = self.trunks.get(trunk)
        if originator is None:
            have = ", ".join(sorted(self.trunks)) or "none configured"
            raise CommandError(f"trunk {trunk!r} cannot place calls (have: {have})")
        attempt = await originator.originate(number, policy, timeout_s, diverted_from)
        call = self.registry.call_of(attempt.leg) if attempt.leg is not None else None
        return attempt, call

    def _cancel_answer_timer(self, call_id: str) -> None:
        handle = self._answer_timers.pop(call_id, None)
        if handle is not None:
            handle.cancel()

    def _stop_player(self, call: Call, completed: bool) -> None:
        call.player = None
        call.barge_in = False
        self._playing.discard(call)
        if call.play_done is not None and not call.play_done.done():
            call.play_done.set_result(completed)
        call.play_done = None

    def _tick(self) -> None:
        """20 ms clock: one frame of each playing prompt."""
        for call in list(self._playing):
            player = call.player
            frame = player.next_frame() if player is not None else None
            if frame is None:
                self._stop_player(call, completed=True)
                continue
            call.caller.media.send_audio(frame)

    async def play(self, call_id: str, prompt: str, barge_in: bool, loop: bool) -> tuple[bool, str]:
        """Play a prompt to the caller; returns (completed, the digit that interrupted it)."""
        call = self.registry.get(call_id)
        if call.state != CallState.ANSWERED:
            raise CommandError(
                f"call {call_id} is {call.state.value}; prompts play only to "
                "answered calls that are not bridged"
            )
        frames_ = self.prompts.get(prompt)
        self._stop_player(call, completed=False)
        if barge_in and call.digits:
            return False, call.digits[0]
        call.player = PromptPlayer(frames_, loop=loop)
        call.barge_in = barge_in
        self._playing.add(call)
        if loop:
            return False, ""
        done = call.play_done = asyncio.get_running_loop().create_future()
        ended = asyncio.ensure_future(call.ended.wait())
        try:
            await asyncio.wait({done, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if call.ended.is_set():
            raise CallGone(call_id)
        completed = done.result()
        return completed, "" if completed else (call.digits[0] if call.digits else "")

    def stop_play(self, call_id: str) -> Call:
        call = self.registry.get(call_id)
        self._stop_player(call, completed=False)
        return call

    async def collect(
        self, call_id: str, max_digits: int, timeout_ms: int, inter_digit_ms: int, terminators: str
    ) -> tuple[str, str]:
        """Digits the caller keys: returns (digits, why collection stopped)."""
        call = self.registry.get(call_id)
        if call.state == CallState.OFFERED:
            raise CommandError(f"call {call_id} is not answered yet")
        max_digits = max_digits or 1
        timeout = (timeout_ms or 5000) / 1000
        got = ""
        try:
            while len(got) < max_digits:
                digit = await call.next_digit(timeout)
                if digit is None:
                    return got, "timeout"
                if digit in terminators:
                    return got, "terminator"
                got += digit
                timeout = (inter_digit_ms or timeout_ms or 5000) / 1000
        except CallGone:
            return got, "hangup"
        return got, "max_digits"

    async def connect(
        self, call_id: str, extension: str, ring_timeout_s: float, agent_id: str, queue: str
    ) -> Attempt:
        """Ring an extension and bridge it to the call."""
        call = self.registry.get(call_id)
        if call.state != CallState.ANSWERED or call.ringing_endpoint:
            raise CommandError(
                f"call {call_id} is {call.state.value}"
                f"{' and already ringing an endpoint' if call.ringing_endpoint else ''}"
            )
        if self.endpoints is None:
            return Attempt(Outcome.UNREACHABLE, None, "no channel can ring endpoints")
        call.ringing_endpoint = True
        try:
            attempt = await self.endpoints.ring_endpoint(
                extension,
                CallerParty(call.call_id, call.ani, call.caller_name),
                ring_timeout_s,
                call.ended,
            )
        finally:
            call.ringing_endpoint = False
        if attempt.outcome is not Outcome.ANSWERED or attempt.leg is None:
            return attempt
        leg = attempt.leg
        if call.ended.is_set():  # the caller left while the channel finished
            self.spawn(leg.signalling.hang_up(leg), f"bye-{leg.leg_id}")
            self.release_soon(leg)
            return Attempt(Outcome.CALLER_GONE, leg, "caller hung up while connecting")
        call.agent, call.agent_id, call.queue = leg, agent_id, queue
        self.registry.bind_leg(call, leg)
        self._bridge(call, endpoint=extension)
        return attempt

    def _bridge(self, call: Call, endpoint: str) -> None:
        assert call.agent is not None
        self._stop_player(call, completed=False)
        recording = None
        if self.recorder is not None:
            recording = self.recorder.start(call.call_id, call.agent_id, call.queue, call.trace)
        call.recording = recording
        call.agent_endpoint = endpoint
        call.state = CallState.BRIDGED
        self.arrange(call)
        if call.bridged_at is None:
            call.bridged_at = time.monotonic()
        self.events.bridged(call, call.agent.leg_id, endpoint)
        log.info("call %s bridged to %s (%s)", call.call_id, endpoint, call.agent_id)

    # ---- media arrangement and leg bookkeeping for call control --------------------------
    def require_prompt(self, name: str) -> None:
        """CommandError unless the prompt exists (hold music must, before anyone is held)."""
        try:
            self.prompts.get(name)
        except Exception as exc:
            raise CommandError(f"hold music {name!r} is not available: {exc}") from None

    def arrange(self, call: Call) -> None:
        """The call's media for its parties: the two-party bridge for a plain talk, else a
        room mixing them as :func:`~gateway.core.parties.hearing` says."""
        if call.state != CallState.BRIDGED or call.agent is None:
            self._stop_media(call)
            return
        self._stop_player(call, completed=False)
        parties = call.parties()
        tap = call.recording.tap if call.recording is not None else None
        if is_plain(parties, call.held, call.muted):
            if call.room is not None:
                call.room.stop()
                call.room = None
            bridge = call.bridge
            if bridge is not None and (
                bridge.a is call.caller.media and bridge.b is call.agent.media
            ):
                return
            if bridge is not None:
                bridge.stop()
            call.bridge = Bridge(call.caller.media, call.agent.media, tap=tap)
            call.bridge.start(self.clock)
            return
        if call.bridge is not None:
            call.bridge.stop()
            call.bridge = None
        room = call.room
        if room is None:
            room = call.room = Room(tap, tap_key=call.caller.leg_id)
            room.start(self.clock)
        keys = {p.key for p in parties}
        for key in list(room.members):
            if key != MOH and key not in keys:
                room.leave(key)
        for party in parties:
            if party.key not in room.members:
                room.join(party.key, party.leg.media)
        if call.held and MOH not in room.members:
            room.add_source(MOH, PromptPlayer(self.prompts.get(self.hold_prompt), loop=True))
        elif not call.held and MOH in room.members:
            room.leave(MOH)
        room.hear(hearing(parties, call.held, call.muted))

    def _stop_media(self, call: Call) -> None:
        if call.bridge is not None:
            call.bridge.stop()
            call.bridge = None
        if call.room is not None:
            call.room.stop()
            call.room = None

    def unbridge(self, call: Call) -> None:
        """The agent leaves the call for now (a transfer to a queue): the caller hears hold
        music from the gateway until the ACD plays its own; the call is answered again, so
        the ACD can connect it, and its recording is finished."""
        if call.hold_since is not None:
            call.hold_ended(time.monotonic())
        call.held, call.held_by, call.muted = set(), "", set()
        call.agent, call.state = None, CallState.ANSWERED
        self._stop_media(call)
        if call.recording is not None:
            recording, call.recording = call.recording, None
            self.spawn(recording.finish(), f"recording-{call.call_id}")
        try:
            frames_ = self.prompts.get(self.hold_prompt)
        except Exception:
            frames_ = []
        if frames_:
            call.player = PromptPlayer(frames_, loop=True)
            self._playing.add(call)

    def rebridge(self, call: Call) -> None:
        """Undo :meth:`unbridge` (the ACD would not take the call back)."""
        assert call.agent is not None
        self._bridge(call, call.agent_endpoint)

    def detach(self, call: Call, leg: Leg) -> None:
        """``leg`` leaves ``call`` without being hung up (it moves to another call)."""
        call.others = [p for p in call.others if p.leg is not leg]
        if call.agent is leg:
            call.agent = None
        leg.media.on_dtmf = None  # its digits were that call's
        self.registry.unbind_leg(call, leg)

    def end_moved(self, call: Call, detail: str, keep: Leg) -> None:
        """End a call whose far party moved to another call (attended transfer by REFER)."""
        self.end(call, EndReason.SYSTEM, detail, by=keep)

    def release_soon(self, leg: Leg) -> None:
        """The core is done with a leg that left its call: its channel releases it once the
        hang-up just spawned has started (the channel answers late retransmissions about it
        on its own, e.g. the SIP channel's FinishedDialog)."""

        async def release() -> None:
            leg.signalling.release(leg)

        self.spawn(release(), f"release-{leg.leg_id}")

    def place(self, agent_leg: Leg, endpoint: str, number: str, kind: str, trunk: str) -> Call:
        """Click-to-dial: the agent answered, the call exists (outbound) while the customer
        is dialled; until then the agent's leg stands in the caller's place."""
        call_id = self.offer(
            agent_leg,
            Offer(
                ani=endpoint,
                dnis=number,
                trunk=trunk,
                channel="analog" if trunk == "analog" else "sip",
                outbound=True,
            ),
        )
        return self.registry.get(call_id)

    def end_unanswered(self, call: Call, detail: str) -> None:
        """The customer did not answer: the agent's leg is hung up, the call ends."""
        self.end(call, EndReason.FAR_END, detail)

    def connect_placed(self, call: Call, customer: Leg, agent_id: str, endpoint: str) -> None:
        """The customer answered a click-to-dial: the customer is the call's far party, the
        agent's leg its agent, and the two are bridged (CallBridged with the agent)."""
        agent_leg = call.caller
        call.caller, call.agent, call.agent_id = customer, agent_leg, agent_id
        self.registry.bind_leg(call, customer)
        customer.media.on_dtmf = lambda digit, c=call: self._digit(c, digit)
        agent_leg.media.on_dtmf = None
        self._bridge(call, endpoint)

    def forget(self, call: Call, leg: Leg) -> None:
        """A leg that left the call: the call no longer knows it (a late report about the
        leg finds no call, which is how it is ignored)."""
        self.registry.unbind_leg(call, leg)

    def hangup(self, call_id: str, detail: str, by_agent: bool = False) -> Call:
        """Ends a call on command: the agent's own hang-up from the desk, or a service's or a
        supervisor's release."""
        call = self.registry.get(call_id)
        reason = EndReason.AGENT_HANGUP if by_agent else EndReason.SYSTEM
        self.end(call, reason, detail or "hung up by command")
        return call

    def end(self, call: Call, reason: EndReason, detail: str, by: Leg | None = None) -> None:
        """End a call once: release every other leg, stop media, announce CallEnded."""
        if call.state == CallState.ENDED:
            return
        was = call.state
        call.state = CallState.ENDED
        call.ended.set()
        self._cancel_answer_timer(call.call_id)
        self._stop_player(call, completed=False)
        self._stop_media(call)
        now = time.monotonic()
        call.hold_ended(now)
        for leg in call.legs():
            if leg is by or leg.ended:
                continue
            if leg.inbound and not leg.answered:
                leg.signalling.reject(leg, detail)
            elif leg.answered:
                self.spawn(leg.signalling.hang_up(leg), f"bye-{leg.leg_id}")
        talk_ms = int((now - call.bridged_at) * 1000) if call.bridged_at else 0
        self.events.ended(
            call, reason, detail, duration_ms=int((now - call.offered_at) * 1000), talk_ms=talk_ms
        )
        CALLS.labels(reason.value, self.site).inc()
        log.info("call %s ended (%s, was %s): %s", call.call_id, reason.value, was.value, detail)
        self.spawn(self._finish(call), f"finish-{call.call_id}")

    async def _finish(self, call: Call) -> None:
        """Release the ended call's legs and forget it, at once: this task runs after the
        hang-ups :meth:`end` spawned have started, and each channel answers late messages
        about a released leg by itself (the SIP channel keeps a small FinishedDialog for
        64*T1), so nothing of the call - legs, media, SDP, transactions' leg state, the
        call and its recording - outlives its end by more than the recording's sealing.
        The call is no longer live from :meth:`end` on (ListCalls, commands: CallGone),
        and CallEnded was announced there. The legs' digit hooks close over the call, which
        holds the legs: dropped here, the call is freed by reference counting, not left as
        cyclic garbage for the collector's full (slow, pausing) collections."""
        for leg in call.legs():
            leg.media.on_dtmf = None
            leg.signalling.release(leg)
        try:
            if call.recording is not None:
                await call.recording.finish()
        finally:
            self.registry.remove(call)

    def list_calls(self) -> list[Call]:
        return self.registry.live()
