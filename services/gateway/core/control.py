"""Call control: what agents, supervisors and phones do inside a call - hold and resume,
blind and attended transfer, consult, conference, monitor, mute, digits.

Every operation ends in the same few moves on the call (:class:`~gateway.core.calls.Call`):
legs join or leave its parties, parties go on or off hold, and the switch re-arranges the
call's media (:meth:`~gateway.core.switch.Switch.arrange`: the two-party bridge for a plain
talk, else a mixed room that follows :func:`~gateway.core.parties.hearing`). The gRPC servicer
and the SIP channel (re-INVITE hold, REFER) both land here, so a desk and a phone do the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from gateway.core.calls import Call, CallRegistry, CallState, CommandError, EndReason
from gateway.core.contracts import (
    AcdLink,
    Attempt,
    CallerParty,
    EndpointDialer,
    Leg,
    Originator,
    Outcome,
)
from gateway.core.parties import MonitorMode, Party, Role
from gateway.core.steps import (
    ConferenceJoined,
    ConferenceLeft,
    ConsultEnded,
    ConsultStarted,
    Held,
    MonitorStarted,
    MonitorStopped,
    Resumed,
    Step,
    Transferred,
)

__all__ = ["MAX_PARTIES", "CallSwitch", "Control", "TargetKind"]

log = logging.getLogger(__name__)

MAX_PARTIES = 60  # a room's talkers and listeners together (MVB2000: 30-60)
AGENT_RING_S = 20.0  # click-to-dial: how long the agent's own phone rings


class TargetKind:
    EXTENSION = "extension"
    QUEUE = "queue"
    NUMBER = "number"


class StepEvents(Protocol):
    def bridged(self, call: Call, leg_id: str, endpoint: str) -> None: ...

    def step(self, call: Call, step: Step) -> None: ...


class CallSwitch(Protocol):
    """What call control uses of the switch (gateway.core.switch.Switch)."""

    registry: CallRegistry
    endpoints: EndpointDialer | None
    trunks: dict[str, Originator]
    acd: AcdLink | None
    hold_prompt: str
    number_trunk: str
    refer_timeout_s: float

    @property
    def events(self) -> StepEvents: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...

    def arrange(self, call: Call) -> None: ...

    def require_prompt(self, name: str) -> None: ...

    def release_soon(self, leg: Leg) -> None: ...

    def forget(self, call: Call, leg: Leg) -> None: ...

    def unbridge(self, call: Call) -> None: ...

    def rebridge(self, call: Call) -> None: ...

    def detach(self, call: Call, leg: Leg) -> None: ...

    def end_moved(self, call: Call, detail: str, keep: Leg) -> None: ...

    def end(self, call: Call, reason: EndReason, detail: str, by: Leg | None = None) -> None: ...

    def place(self, agent_leg: Leg, endpoint: str, number: str, kind: str, trunk: str) -> Call: ...

    def end_unanswered(self, call: Call, detail: str) -> None: ...

    def connect_placed(self, call: Call, customer: Leg, agent_id: str, endpoint: str) -> None: ...


class Control:
    """Call-control commands on the switch's calls; errors as the switch's CommandError."""

    def __init__(self, switch: CallSwitch) -> None:
        self.switch = switch

    # ---- helpers -------------------------------------------------------------------------
    def _error(self, message: str) -> CommandError:
        return CommandError(message)

    def _talking(self, call: Call, what: str) -> None:
        if call.state != CallState.BRIDGED or call.agent is None:
            raise self._error(
                f"call {call.call_id} is {call.state.value}; {what} needs it bridged to an agent"
            )

    def _idle(self, call: Call, what: str) -> None:
        if call.busy:
            raise self._error(f"call {call.call_id} is busy ({call.busy}); {what} must wait")

    def _two_party(self, call: Call, what: str) -> None:
        if call.consult is not None:
            raise self._error(f"call {call.call_id} has a consult on; {what} needs it ended first")
        if any(p.role is not Role.SUPERVISOR for p in call.others):
            raise self._error(
                f"call {call.call_id} is a conference; {what} works on two-party calls"
            )

    def _leg(self, call: Call, leg_id: str) -> Leg:
        party = call.party(leg_id)
        if party is None:
            raise self._error(f"leg {leg_id} is not in call {call.call_id}")
        return party.leg

    def _other_of(self, call: Call, leg: Leg) -> Leg:
        assert call.agent is not None
        return call.caller if leg is call.agent else call.agent

    async def reach(
        self, call: Call, kind: str, target: str, timeout_s: float, trunk: str = ""
    ) -> Attempt:
        """Ring an extension or call a number (on ``trunk``, default the switch's trunk for
        numbers) for this call; an answered leg is bound to the call (the caller may not wait
        for it: then it is hung up and CALLER_GONE)."""
        sw = self.switch
        if kind == TargetKind.EXTENSION:
            if sw.endpoints is None:
                return Attempt(Outcome.UNREACHABLE, None, "no channel can ring extensions")
            attempt = await sw.endpoints.ring_endpoint(
                target, CallerParty(call.call_id, call.ani, call.caller_name), timeout_s, call.ended
            )
        elif kind == TargetKind.NUMBER:
            trunk = trunk or sw.number_trunk
            originator = sw.trunks.get(trunk)
            if originator is None:
                return Attempt(Outcome.UNREACHABLE, None, f"no trunk {trunk!r} for outside numbers")
            attempt = await originator.originate(target, "after_dial", timeout_s, standalone=False)
        else:
            raise self._error(f"cannot ring a {kind}")
        leg = attempt.leg
        if attempt.outcome is not Outcome.ANSWERED or leg is None:
            return attempt
        if call.ended.is_set():
            sw.spawn(leg.signalling.hang_up(leg), f"bye-{leg.leg_id}")
            sw.release_soon(leg)
            return Attempt(Outcome.CALLER_GONE, None, "the call ended while the target answered")
        sw.registry.bind_leg(call, leg)
        return attempt

    async def _reach_busy(
        self, call: Call, busy: str, kind: str, target: str, timeout_s: float
    ) -> Attempt:
        """:meth:`reach`, with the call marked busy meanwhile (one ringing at a time)."""
        call.busy = busy
        try:
            return await self.reach(call, kind, target, timeout_s)
        finally:
            call.busy = ""

    def _drop(self, call: Call, leg: Leg, *, hang_up: bool = True) -> None:
        """A leg leaves the call (we hang it up unless it is gone already or the channel
        does it); its channel releases it once the hang-up has started."""
        sw = self.switch
        if hang_up and not leg.ended and leg.answered:
            sw.spawn(leg.signalling.hang_up(leg), f"bye-{leg.leg_id}")
        sw.release_soon(leg)
        sw.forget(call, leg)

    # ---- hold ----------------------------------------------------------------------------
    def _hold(self, call: Call, holder: Leg, held: Leg, by: str) -> None:
        now = time.monotonic()
        call.held = {held.leg_id}
        call.held_by = holder.leg_id
        call.hold_started(now)
        self.switch.arrange(call)
        self.switch.events.step(call, Held(holder.leg_id, call.agent_id, by))

    def _resume(self, call: Call) -> None:
        held_ms = call.hold_ended(time.monotonic())
        holder = call.held_by
        call.held, call.held_by = set(), ""
        self.switch.arrange(call)
        self.switch.events.step(call, Resumed(holder, call.agent_id, held_ms))

    async def hold(self, call_id: str, leg_id: str = "") -> Call:
        """The desk holds: the far party hears music, the holder's phone is told (sendonly)."""
        call = self.switch.registry.get(call_id)
        self._talking(call, "hold")
        self._two_party(call, "hold")
        self.switch.require_prompt(self.switch.hold_prompt)
        if call.held:
            return call  # holding a held call is a no-op
        holder = self._leg(call, leg_id) if leg_id else call.agent
        assert holder is not None
        self._hold(call, holder, self._other_of(call, holder), "desk")
        problem = await holder.signalling.hold(holder, True)
        if problem:
            log.warning("call %s: holder's phone not told of the hold: %s", call_id, problem)
        return call

    async def resume(self, call_id: str, leg_id: str = "") -> Call:
        call = self.switch.registry.get(call_id)
        self._talking(call, "resume")
        if call.consult is not None:
            raise self._error(f"call {call_id} has a consult on; end it to resume the caller")
        if not call.held:
            return call
        holder_id = call.held_by
        self._resume(call)
        holder = call.party(holder_id)
        if holder is not None:
            problem = await holder.leg.signalling.hold(holder.leg, False)
            if problem:
                log.warning("call %s: holder's phone not told of the resume: %s", call_id, problem)
        return call

    def phone_hold(self, leg: Leg, held: bool) -> None:
        """A phone held (or resumed) by itself: the other party hears music meanwhile."""
        call = self.switch.registry.call_of(leg)
        if call is None or call.state != CallState.BRIDGED or call.agent is None:
            return
        if leg.leg_id not in {p.key for p in call.parties()}:
            return
        if held and not call.held:
            if call.others:  # in a room the holder's own side goes quiet
                call.held = {leg.leg_id}
                call.held_by = leg.leg_id
                call.hold_started(time.monotonic())
                self.switch.arrange(call)
                self.switch.events.step(call, Held(leg.leg_id, call.agent_id, "phone"))
            else:
                self._hold(call, leg, self._other_of(call, leg), "phone")
        elif not held and call.held and call.held_by == leg.leg_id and call.consult is None:
            self._resume(call)

    # ---- transfer ------------------------------------------------------------------------
    async def transfer(
        self,
        call_id: str,
        kind: str,
        target: str,
        by_agent_id: str,
        timeout_s: float,
        *,
        keep_transferor: bool = False,
    ) -> Attempt:
        """Blind transfer: the caller hears music while the target rings; when it answers the
        agent's leg leaves (``keep_transferor``: the channel releases it, after telling the
        phone - REFER) and the caller talks to the target. A failed attempt gives the caller
        back to the agent. A queue: the call goes back to the ACD."""
        sw = self.switch
        call = sw.registry.get(call_id)
        self._talking(call, "transfer")
        self._two_party(call, "transfer")
        self._idle(call, "transfer")
        if kind == TargetKind.QUEUE:
            return await self._to_queue(call, target, by_agent_id)
        sw.require_prompt(sw.hold_prompt)
        old = call.agent
        assert old is not None
        was_held = bool(call.held)
        if not was_held:
            self._hold(call, old, call.caller, "desk")
        attempt = await self._reach_busy(call, f"transfer to {target}", kind, target, timeout_s)
        if attempt.outcome is not Outcome.ANSWERED or attempt.leg is None:
            if self._agent_left(call, old, f"transfer to {target}", attempt):
                return attempt
            if call.state == CallState.BRIDGED and not was_held:
                self._resume(call)
            return attempt
        # an agent who hung up while the target rang has left already: nothing to hang up
        self._hand_over(call, attempt.leg, target, by_agent_id, kind, "blind", old, keep_transferor)
        return attempt

    def _agent_left(self, call: Call, agent: Leg, what: str, attempt: Attempt) -> bool:
        """The agent hung up while a transfer or consult rang (the caller waited on music),
        and it failed: the call ends. True when so."""
        if not agent.ended or call.state == CallState.ENDED:
            return False
        detail = (
            f"the agent left during a {what} that failed: {attempt.detail or attempt.outcome.value}"
        )
        self.switch.end(call, EndReason.AGENT_HANGUP, detail, by=agent)
        return True

    def _hand_over(
        self,
        call: Call,
        new: Leg,
        target: str,
        by_agent_id: str,
        kind: str,
        how: str,
        old: Leg | None,
        keep_old: bool,
        to_agent_id: str = "",
    ) -> None:
        """The caller's new counterpart is ``new``; ``old`` (the transferor) leaves."""
        sw = self.switch
        from_leg = old.leg_id if old is not None else ""
        if call.hold_since is not None:
            held_ms = call.hold_ended(time.monotonic())
            sw.events.step(call, Resumed(call.held_by, call.agent_id, held_ms))
        call.held, call.held_by = set(), ""
        call.agent, call.agent_id, call.agent_endpoint = new, to_agent_id, target
        if call.state != CallState.BRIDGED:
            call.state = CallState.BRIDGED
        if old is not None:
            self._drop(call, old, hang_up=not keep_old)
        sw.arrange(call)
        sw.events.step(
            call, Transferred(from_leg, by_agent_id, how, kind, target, new.leg_id, to_agent_id)
        )
        sw.events.bridged(call, new.leg_id, target)
        log.info("call %s transferred (%s) to %s %s", call.call_id, how, kind, target)

    async def _to_queue(self, call: Call, queue: str, by_agent_id: str) -> Attempt:
        """Back through the ACD: the agent leaves, the caller waits in ``queue`` with hold
        music (the ACD plays its own once it has the call)."""
        sw = self.switch
        if sw.acd is None:
            return Attempt(Outcome.UNREACHABLE, None, "the gateway has no ACD to queue calls in")
        old = call.agent
        assert old is not None
        from_agent = call.agent_id or by_agent_id
        sw.unbridge(call)  # the ACD may ring the next agent as soon as it has the call
        call.busy = f"requeue to {queue}"
        try:
            problem = await sw.acd.requeue(call.call_id, queue, from_agent)
        finally:
            call.busy = ""
        if problem:
            if call.state == CallState.ANSWERED and call.agent is None and not old.ended:
                call.agent = old
                sw.rebridge(call)
            else:
                self._drop(call, old)
            return Attempt(Outcome.REJECTED, None, f"queue {queue}: {problem}")
        self._drop(call, old)
        call.queue = queue
        sw.events.step(call, Transferred(old.leg_id, from_agent, "blind", TargetKind.QUEUE, queue))
        return Attempt(Outcome.ANSWERED, None, f"queued in {queue}")

    async def refer(self, leg: Leg, kind: str, target: str, replaces: str) -> Attempt:
        """A phone's REFER: blind to an extension or number, or (``replaces``: the leg id of
        the phone's other call) attended - that call's target joins this call's caller."""
        sw = self.switch
        call = sw.registry.call_of(leg)
        if call is None or call.state == CallState.ENDED:
            return Attempt(Outcome.UNREACHABLE, None, "the call is gone")
        if leg is not call.agent:
            return Attempt(Outcome.REJECTED, None, "only the agent's phone may transfer the call")
        if replaces:
            return self._join_replaces(call, leg, replaces)
        try:
            return await self.transfer(
                call.call_id, kind, target, call.agent_id, sw.refer_timeout_s, keep_transferor=True
            )
        except CommandError as exc:  # the state does not allow it
            return Attempt(Outcome.REJECTED, None, str(exc))

    def _join_replaces(self, call: Call, leg: Leg, replaces: str) -> Attempt:
        """Attended transfer from a phone: its other call (``replaces`` is the phone's leg
        in it) ends, and that call's far party becomes this call's agent."""
        sw = self.switch
        other = sw.registry.call_by_leg_id(replaces)
        if other is None or other is call or other.state != CallState.BRIDGED:
            return Attempt(Outcome.UNREACHABLE, None, f"no bridged call has leg {replaces}")
        phone_leg = next((p.leg for p in other.parties() if p.key == replaces), None)
        if phone_leg is None:
            return Attempt(Outcome.UNREACHABLE, None, f"leg {replaces} is not in a call")
        far = other.agent if phone_leg is other.caller else other.caller
        if far is None or other.others:
            return Attempt(Outcome.REJECTED, None, "the replaced call is not a two-party call")
        endpoint = other.agent_endpoint if far is other.agent else other.ani
        far_agent_id = other.agent_id if far is other.agent else ""
        # the far party moves: the other call lets it go without hanging it up (when it was
        # that call's caller, the phone's leg stands in its place until the call ends)
        if far is other.caller:
            other.caller = phone_leg
        other.agent = None
        sw.detach(other, far)
        sw.registry.bind_leg(call, far)
        sw.end_moved(other, f"transferred into call {call.call_id}", keep=far)
        self._hand_over(
            call,
            far,
            endpoint,
            call.agent_id,
            TargetKind.EXTENSION,
            "attended",
            leg,
            True,
            far_agent_id,
        )
        return Attempt(Outcome.ANSWERED, far, "")

    # ---- consult -------------------------------------------------------------------------
    async def consult(
        self, call_id: str, kind: str, target: str, by_agent_id: str, timeout_s: float
    ) -> Attempt:
        """The caller is held (music) while the agent is bridged to the target."""
        sw = self.switch
        call = sw.registry.get(call_id)
        self._talking(call, "consult")
        self._two_party(call, "consult")
        self._idle(call, "consult")
        sw.require_prompt(sw.hold_prompt)
        agent = call.agent
        assert agent is not None
        if not call.held:
            self._hold(call, agent, call.caller, "desk")
        attempt = await self._reach_busy(call, f"consult with {target}", kind, target, timeout_s)
        if attempt.outcome is not Outcome.ANSWERED or attempt.leg is None:
            if self._agent_left(call, agent, f"consult with {target}", attempt):
                return attempt
            if call.state == CallState.BRIDGED:
                self._resume(call)
            return attempt
        if agent.ended:  # the agent hung up while the target rang: the transfer completes
            self._hand_over(call, attempt.leg, target, by_agent_id, kind, "attended", agent, True)
            return attempt
        party = Party(attempt.leg, Role.CONSULT, target)
        call.others.append(party)
        call.consult = party
        sw.arrange(call)
        sw.events.step(call, ConsultStarted(party.key, call.agent_id, kind, target))
        return attempt

    def end_consult(self, call_id: str, action: str) -> Call:
        """COMPLETE: caller and target talk, the agent leaves. CANCEL: the target is dropped
        and the caller resumed. SWAP: the agent talks to the other one."""
        sw = self.switch
        call = sw.registry.get(call_id)
        party = call.consult
        if party is None:
            raise self._error(f"call {call_id} has no consult to end")
        agent = call.agent
        assert agent is not None
        if action == "swap":
            call.held = {party.key} if call.caller.leg_id in call.held else {call.caller.leg_id}
            sw.arrange(call)
            return call
        call.others.remove(party)
        call.consult = None
        if action == "cancel":
            self._drop(call, party.leg)
            self._resume(call)
            sw.events.step(call, ConsultEnded(party.key, call.agent_id, "cancelled"))
            return call
        agent_id = call.agent_id
        sw.events.step(call, ConsultEnded(party.key, agent_id, "completed"))
        self._hand_over(
            call,
            party.leg,
            party.endpoint,
            agent_id,
            TargetKind.EXTENSION,
            "attended",
            agent,
            False,
        )
        return call

    # ---- conference ----------------------------------------------------------------------
    async def add_party(
        self, call_id: str, kind: str, target: str, by_agent_id: str, timeout_s: float
    ) -> Attempt:
        """Ring the target into the call's room; every party hears all the others."""
        sw = self.switch
        call = sw.registry.get(call_id)
        self._talking(call, "a conference")
        self._idle(call, "adding a party")
        if call.consult is not None:
            raise self._error(f"call {call_id} has a consult on; complete or cancel it first")
        if len(call.parties()) >= MAX_PARTIES:
            raise self._error(f"call {call_id} has {MAX_PARTIES} parties, the most a room takes")
        attempt = await self._reach_busy(call, f"adding {target}", kind, target, timeout_s)
        if attempt.outcome is not Outcome.ANSWERED or attempt.leg is None:
            return attempt
        party = Party(attempt.leg, Role.PARTY, target)
        call.others.append(party)
        sw.arrange(call)
        sw.events.step(call, ConferenceJoined(party.key, target, "", self._count(call)))
        return attempt

    @staticmethod
    def _count(call: Call) -> int:
        return sum(1 for p in call.parties() if p.talks)

    def parties_in(self, call_id: str) -> int:
        """The talking parties of a live call (0 when it has ended)."""
        call = self.switch.registry.calls.get(call_id)
        return 0 if call is None or call.state == CallState.ENDED else self._count(call)

    def remove_party(self, call_id: str, leg_id: str) -> Call:
        sw = self.switch
        call = sw.registry.get(call_id)
        party = call.party(leg_id)
        if party is None:
            raise self._error(f"leg {leg_id} is not in call {call_id}")
        if party.role is Role.CALLER:
            raise self._error("the caller cannot be removed; hang up the call instead")
        self._drop(call, party.leg)
        if not self.party_left(call, party.leg):  # the agent of a two-party call
            self.switch.end(call, EndReason.SYSTEM, f"leg {leg_id} removed", by=party.leg)
        return call

    # ---- monitor -------------------------------------------------------------------------
    async def monitor(
        self, call_id: str, mode: MonitorMode, supervisor_id: str, endpoint: str, timeout_s: float
    ) -> tuple[Attempt, str]:
        """A supervisor joins (rung at ``endpoint``) or, already in, switches mode."""
        sw = self.switch
        call = sw.registry.get(call_id)
        self._talking(call, "monitoring")
        present = next((p for p in call.others if p.role is Role.SUPERVISOR), None)
        if present is not None:
            if supervisor_id and present.agent_id and present.agent_id != supervisor_id:
                raise self._error(f"call {call_id} is monitored by {present.agent_id} already")
            present.mode = mode
            log.info("call %s: supervisor %s switches to %s", call_id, present.agent_id, mode.value)
            sw.arrange(call)
            sw.events.step(
                call, MonitorStarted(present.key, present.agent_id, mode.value, call.agent_id)
            )
            return Attempt(Outcome.ANSWERED, present.leg, "mode switched"), present.key
        self._idle(call, "monitoring")
        attempt = await self._reach_busy(
            call, f"ringing supervisor {endpoint}", TargetKind.EXTENSION, endpoint, timeout_s
        )
        if attempt.outcome is not Outcome.ANSWERED or attempt.leg is None:
            return attempt, ""
        party = Party(attempt.leg, Role.SUPERVISOR, endpoint, supervisor_id, mode)
        log.info("call %s: supervisor %s joins in %s", call_id, supervisor_id, mode.value)
        call.others.append(party)
        sw.arrange(call)
        sw.events.step(call, MonitorStarted(party.key, supervisor_id, mode.value, call.agent_id))
        return attempt, party.key

    def stop_monitor(self, call_id: str, leg_id: str) -> Call:
        sw = self.switch
        call = sw.registry.get(call_id)
        party = next(
            (
                p
                for p in call.others
                if p.role is Role.SUPERVISOR and (not leg_id or p.key == leg_id)
            ),
            None,
        )
        if party is None:
            raise self._error(
                f"call {call_id} has no supervisor {leg_id or ''} on it".replace("  ", " ")
            )
        self._drop(call, party.leg)
        self.party_left(call, party.leg)
        return call

    # ---- mute, digits --------------------------------------------------------------------
    def mute(self, call_id: str, leg_id: str, muted: bool) -> Call:
        call = self.switch.registry.get(call_id)
        self._talking(call, "mute")
        leg = self._leg(call, leg_id) if leg_id else call.agent
        assert leg is not None
        if muted:
            call.muted.add(leg.leg_id)
        else:
            call.muted.discard(leg.leg_id)
        self.switch.arrange(call)
        return call

    async def send_digits(self, call_id: str, digits: str, leg_id: str) -> Call:
        """``leg_id`` (default: the agent) presses the digits: they go to the far party."""
        call = self.switch.registry.get(call_id)
        self._talking(call, "sending digits")
        presser = self._leg(call, leg_id) if leg_id else call.agent
        assert presser is not None and call.agent is not None
        if presser is call.caller:
            towards = [call.agent]
        else:
            towards = [p.leg for p in call.parties() if p.talks and p.leg is not presser]
        for leg in towards:
            await leg.media.send_digits(digits)
        return call

    # ---- click-to-dial -------------------------------------------------------------------
    async def dial_out(
        self,
        agent_id: str,
        endpoint: str,
        kind: str,
        number: str,
        trunk: str,
        ring_timeout_s: float,
    ) -> tuple[Attempt, str]:
        """Ring the agent's endpoint; once it answers, the call exists (CallOffered, outbound)
        and the customer is dialled (an extension, or a number on a trunk); when the customer
        answers, agent and customer are bridged (CallBridged with the agent). Returns the
        attempt and the call id ("" when the agent did not answer)."""
        sw = self.switch
        if sw.endpoints is None:
            return Attempt(Outcome.UNREACHABLE, None, "no channel can ring extensions"), ""
        gone = asyncio.Event()
        first = await sw.endpoints.ring_endpoint(
            endpoint, CallerParty("", number, "click-to-dial"), AGENT_RING_S, gone
        )
        agent_leg = first.leg
        if first.outcome is not Outcome.ANSWERED or agent_leg is None:
            detail = f"the agent's phone {endpoint}: {first.detail or first.outcome.value}"
            return Attempt(first.outcome, None, detail), ""
        if kind == TargetKind.NUMBER:
            trunk = trunk or sw.number_trunk
        call = sw.place(agent_leg, endpoint, number, kind, trunk)
        attempt = await self.reach(call, kind, number, ring_timeout_s, trunk)
        customer = attempt.leg
        if attempt.outcome is not Outcome.ANSWERED or customer is None:
            if call.state != CallState.ENDED:
                sw.end_unanswered(call, f"{number}: {attempt.detail or attempt.outcome.value}")
            return attempt, call.call_id
        sw.connect_placed(call, customer, agent_id, endpoint)
        return attempt, call.call_id

    # ---- parties leaving by themselves -----------------------------------------------------
    def party_left(self, call: Call, leg: Leg) -> bool:
        """A leg other than the caller's is gone; True when the call goes on without it."""
        sw = self.switch
        if leg is call.agent and call.busy.startswith(("transfer", "consult")):
            return True  # the caller waits on music; the transfer decides (leg.ended tells)
        party = next((p for p in call.others if p.leg is leg), None)
        if party is not None:
            call.others.remove(party)
            call.held.discard(party.key)
            call.muted.discard(party.key)
            if party is call.consult:
                call.consult = None
                sw.events.step(call, ConsultEnded(party.key, call.agent_id, "failed"))
                if call.held == {call.caller.leg_id}:
                    self._resume(call)
            elif party.role is Role.SUPERVISOR:
                sw.events.step(call, MonitorStopped(party.key, party.agent_id))
            else:
                sw.events.step(call, ConferenceLeft(party.key, party.endpoint, self._count(call)))
            if call.held_by == party.key:
                self._resume(call)
            sw.arrange(call)
            return True
        if leg is call.agent:
            talkers = [p for p in call.others if p.role in (Role.PARTY, Role.CONSULT)]
            if not talkers:
                return False
            heir = talkers[0]
            was_consult = heir is call.consult
            call.others.remove(heir)
            call.consult = None
            if was_consult:  # the agent hung up during a consult: the transfer completes
                sw.events.step(call, ConsultEnded(heir.key, call.agent_id, "completed"))
                self._hand_over(
                    call,
                    heir.leg,
                    heir.endpoint,
                    call.agent_id,
                    TargetKind.EXTENSION,
                    "attended",
                    leg,
                    True,
                )
                return True
            sw.events.step(
                call, ConferenceLeft(leg.leg_id, call.agent_endpoint, self._count(call) - 1)
            )
            call.agent, call.agent_endpoint = heir.leg, heir.endpoint
            call.held.discard(leg.leg_id)
            call.muted.discard(leg.leg_id)
            sw.forget(call, leg)
            sw.release_soon(leg)
            sw.arrange(call)
            return True
        return False
