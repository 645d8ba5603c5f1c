"""The `hotline.v1.CallControl` gRPC API: what IVR and ACD may ask the gateway to do.

Errors are explicit: an unknown or ended call is NOT_FOUND, a command that does not fit the
call's state is FAILED_PRECONDITION, a bad argument is INVALID_ARGUMENT - with a message.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol

import grpc

from common import error_info
from common.rpc import Context, callers, calling_service
from gateway.core.calls import Call, CallGone
from gateway.core.contracts import Attempt, Outcome
from gateway.core.control import TargetKind
from gateway.core.flow_owners import FlowOwners
from gateway.core.parties import MonitorMode, Role
from gateway.core.prompts import PromptNotFound
from gateway.core.switch import CommandError, Switch
from gateway.dialplan import CLASSES, DialPlan
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["CallControlServicer"]

CONNECT_RESULTS: dict[Outcome, gw.ConnectResult.ValueType] = {
    Outcome.ANSWERED: gw.CONNECT_RESULT_ANSWERED,
    Outcome.NO_ANSWER: gw.CONNECT_RESULT_NO_ANSWER,
    Outcome.BUSY: gw.CONNECT_RESULT_BUSY,
    Outcome.REJECTED: gw.CONNECT_RESULT_REJECTED,
    Outcome.UNREACHABLE: gw.CONNECT_RESULT_UNREACHABLE,
    Outcome.CALLER_GONE: gw.CONNECT_RESULT_CALLER_GONE,
}
ORIGINATE_RESULTS: dict[Outcome, gw.OriginateResult.ValueType] = {
    Outcome.ANSWERED: gw.ORIGINATE_RESULT_ANSWERED,
    Outcome.NO_LINE: gw.ORIGINATE_RESULT_NO_LINE,
    Outcome.NO_DIAL_TONE: gw.ORIGINATE_RESULT_NO_DIAL_TONE,
    Outcome.BUSY: gw.ORIGINATE_RESULT_BUSY,
    Outcome.NO_ANSWER: gw.ORIGINATE_RESULT_NO_ANSWER,
}
DIAL_CHARS = frozenset("0123456789*#")
DTMF_CHARS = frozenset("0123456789*#ABCD")
ALL_TARGETS = (gw.TARGET_KIND_EXTENSION, gw.TARGET_KIND_QUEUE, gw.TARGET_KIND_NUMBER)
PARTY_TARGETS = (gw.TARGET_KIND_EXTENSION, gw.TARGET_KIND_NUMBER)
TARGET_KINDS: dict[int, str] = {
    gw.TARGET_KIND_EXTENSION: TargetKind.EXTENSION,
    gw.TARGET_KIND_QUEUE: TargetKind.QUEUE,
    gw.TARGET_KIND_NUMBER: TargetKind.NUMBER,
}
CONSULT_ACTIONS: dict[int, str] = {
    gw.CONSULT_ACTION_COMPLETE: "complete",
    gw.CONSULT_ACTION_CANCEL: "cancel",
    gw.CONSULT_ACTION_SWAP: "swap",
}
MONITOR_MODES: dict[int, MonitorMode] = {
    gw.MONITOR_MODE_LISTEN: MonitorMode.LISTEN,
    gw.MONITOR_MODE_WHISPER: MonitorMode.WHISPER,
    gw.MONITOR_MODE_BARGE: MonitorMode.BARGE,
}
DIGITS = frozenset("0123456789")
ANSWER_POLICIES = ("after_dial", "polarity")


class TargetRequest(Protocol):
    """What Transfer, Consult and AddParty requests share."""

    @property
    def call_id(self) -> str: ...

    @property
    def target_kind(self) -> gw.TargetKind.ValueType: ...

    @property
    def target(self) -> str: ...

    @property
    def by_agent_id(self) -> str: ...

    @property
    def ring_timeout_ms(self) -> int: ...


def call_info(call: Call) -> gw.CallInfo:
    return gw.CallInfo(
        call_id=call.call_id,
        state=call.state.value,
        ani=call.ani,
        dnis=call.dnis,
        channel=call.channel,
        bridged_to=call.agent_id,
        started_at_ms=int(call.offered_wall * 1000),
        endpoint=call.agent_endpoint if call.agent is not None else "",
        flow_owner=call.flow_owner,
    )


class CallControlServicer(gateway_pb2_grpc.CallControlServicer):
    #: who may call what (enforced by common.rpc): the IVR and the ACD drive calls; the CRM
    #: drives call control for the desk (agents and supervisors) and force release.
    CALLERS = callers(
        "hotline.v1.CallControl",
        {
            **{
                method: {"ivr", "acd"}
                for method in (
                    "Answer",
                    "Play",
                    "StopPlay",
                    "CollectDigits",
                    "ConnectToEndpoint",
                    "Originate",
                    "ListCalls",
                )
            },
            "AdoptOrphans": {"ivr"},
            "Hangup": {"ivr", "acd", "crm"},
            **{
                method: {"crm"}
                for method in (
                    "Hold",
                    "Resume",
                    "Transfer",
                    "Consult",
                    "EndConsult",
                    "AddParty",
                    "RemoveParty",
                    "Monitor",
                    "StopMonitor",
                    "Mute",
                    "SendDigits",
                    "DialOut",
                )
            },
        },
    )

    def __init__(
        self,
        switch: Switch,
        dial_plan: DialPlan | None = None,
        dialout_ring_timeout_ms: int = 30000,
        flow_owner_timeout_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.switch = switch
        self.dial_plan = dial_plan or DialPlan()
        self.dialout_ring_timeout_ms = dialout_ring_timeout_ms
        self.clock = clock
        self.flow_owners = FlowOwners(flow_owner_timeout_s, clock())

    @staticmethod
    async def _fail(context: Context, exc: Exception) -> NoReturn:
        """NOT_FOUND says which thing is missing in its ErrorInfo (common.error_info)."""
        if isinstance(exc, CallGone):
            call_id = str(exc.args[0])
            await error_info.abort(
                context,
                error_info.status(
                    grpc.StatusCode.NOT_FOUND,
                    f"call {call_id} does not exist or has ended",
                    error_info.CALL_NOT_FOUND,
                    call_id=call_id,
                ),
            )
        if isinstance(exc, PromptNotFound):
            await error_info.abort(
                context,
                error_info.status(
                    grpc.StatusCode.NOT_FOUND,
                    str(exc),
                    error_info.PROMPT_NOT_FOUND,
                    prompt=exc.prompt,
                ),
            )
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("abort returned")  # grpc's abort always raises

    def _acd_took(self, call_id: str, flow_owner: str = "") -> None:
        """A command of the ACD's: the IVR's flow is over for this call (its hold music or
        the ring of an agent), so a restarted IVR must not take it up again. With the
        plain-text development switch no caller is known: a command outside any IVR flow
        (every IVR flow names itself in `flow_owner`, the ACD never does) counts as the
        ACD's, so the flows behave there as they do over mTLS."""
        caller = calling_service()
        if caller == "acd" or (caller is None and not flow_owner):
            with contextlib.suppress(CallGone):  # the command itself says so
                self.switch.registry.get(call_id).flow_owner = ""

    async def _still_the_flows(self, context: Context, call_id: str, flow_owner: str) -> None:
        """An IVR flow's command (`flow_owner` set) for a call that flow no longer has is
        refused: another IVR adopted the call while this one was silent (a loop stalled past
        the owner timeout, then woke up), or the ACD took it. Obeyed, both flows would play
        and collect on the one call."""
        if not flow_owner:
            return
        try:
            owner = self.switch.registry.get(call_id).flow_owner
        except CallGone:
            return  # the command itself says so
        if owner != flow_owner:
            await error_info.abort(
                context,
                error_info.status(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"call {call_id} is no longer in IVR {flow_owner}'s flow: "
                    + (f"IVR {owner} adopted it" if owner else "the ACD has it"),
                    error_info.FLOW_TAKEN_OVER,
                    call_id=call_id,
                    owner=owner,
                ),
            )

    @staticmethod
    async def _invalid(context: Context, message: str) -> NoReturn:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        raise AssertionError("abort returned")

    async def Answer(
        self,
        request: gw.AnswerRequest,  # noqa: N802
        context: Context,
    ) -> gw.CallReply:
        try:
            call = self.switch.answer(request.call_id, request.flow_owner)
        except (CallGone, CommandError) as exc:
            await self._fail(context, exc)
        self.flow_owners.seen(request.flow_owner, self.clock())
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def Play(
        self,
        request: gw.PlayRequest,  # noqa: N802
        context: Context,
    ) -> gw.PlayReply:
        if not request.prompt:
            await self._invalid(context, "prompt is required")
        await self._still_the_flows(context, request.call_id, request.flow_owner)
        self._acd_took(request.call_id, request.flow_owner)
        try:
            completed, digit = await self.switch.play(
                request.call_id, request.prompt, request.barge_in, request.loop
            )
        except (CallGone, CommandError, PromptNotFound) as exc:
            await self._fail(context, exc)
        return gw.PlayReply(call_id=request.call_id, completed=completed, digit=digit)

    async def StopPlay(
        self,
        request: gw.CallRef,  # noqa: N802
        context: Context,
    ) -> gw.CallReply:
        try:
            call = self.switch.stop_play(request.call_id)
        except CallGone as exc:
            await self._fail(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def CollectDigits(
        self,
        request: gw.CollectDigitsRequest,  # noqa: N802
        context: Context,
    ) -> gw.CollectDigitsReply:
        if request.max_digits < 0 or request.timeout_ms < 0 or request.inter_digit_timeout_ms < 0:
            await self._invalid(context, "max_digits and timeouts must not be negative")
        await self._still_the_flows(context, request.call_id, request.flow_owner)
        try:
            digits, reason = await self.switch.collect(
                request.call_id,
                request.max_digits,
                request.timeout_ms,
                request.inter_digit_timeout_ms,
                request.terminators,
            )
        except (CallGone, CommandError) as exc:
            await self._fail(context, exc)
        return gw.CollectDigitsReply(call_id=request.call_id, digits=digits, reason=reason)

    async def ConnectToEndpoint(
        self,
        request: gw.ConnectRequest,  # noqa: N802
        context: Context,
    ) -> gw.ConnectReply:
        if not request.endpoint:
            await self._invalid(context, "endpoint is required")
        timeout_s = (request.ring_timeout_ms or 20000) / 1000
        self._acd_took(request.call_id)
        try:
            attempt = await self.switch.connect(
                request.call_id, request.endpoint, timeout_s, request.agent_id, request.queue
            )
        except CallGone:
            return gw.ConnectReply(
                call_id=request.call_id,
                result=gw.CONNECT_RESULT_CALLER_GONE,
                detail="call has ended",
            )
        except CommandError as exc:
            await self._fail(context, exc)
        return gw.ConnectReply(
            call_id=request.call_id,
            result=CONNECT_RESULTS.get(attempt.outcome, gw.CONNECT_RESULT_REJECTED),
            leg_id=attempt.leg.leg_id if attempt.leg is not None else "",
            detail=attempt.detail,
        )

    async def Originate(
        self,
        request: gw.OriginateRequest,  # noqa: N802
        context: Context,
    ) -> gw.OriginateReply:
        number, policy = request.number, request.answer_policy or "after_dial"
        if not number or len(number) > 32 or not set(number) <= DIAL_CHARS:
            await self._invalid(context, "number must be 1-32 of the digits 0-9 * #")
        if policy not in ANSWER_POLICIES:
            await self._invalid(context, "answer_policy must be after_dial or polarity")
        diverted = request.diverted_from
        if diverted and (len(diverted) > 32 or not set(diverted.removeprefix("+")) <= DIGITS):
            await self._invalid(context, "diverted_from must be digits, optionally a leading +")
        try:
            attempt, call = await self.switch.originate(
                request.trunk or "analog",
                number,
                policy,
                (request.timeout_ms or 30000) / 1000,
                diverted,
            )
        except CommandError as exc:
            await self._fail(context, exc)
        return gw.OriginateReply(
            call_id=call.call_id if call is not None else "",
            result=ORIGINATE_RESULTS.get(attempt.outcome, gw.ORIGINATE_RESULT_NO_ANSWER),
            detail=attempt.detail,
        )

    async def Hangup(
        self,
        request: gw.HangupRequest,  # noqa: N802
        context: Context,
    ) -> gw.CallReply:
        await self._still_the_flows(context, request.call_id, request.flow_owner)
        try:
            call = self.switch.hangup(request.call_id, request.reason, by_agent=request.by_agent)
        except CallGone as exc:
            await self._fail(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def ListCalls(
        self,
        request: gw.ListCallsRequest,  # noqa: N802
        context: Context,
    ) -> gw.ListCallsReply:
        return gw.ListCallsReply(calls=[call_info(c) for c in self.switch.list_calls()])

    async def AdoptOrphans(
        self,
        request: gw.AdoptOrphansRequest,  # noqa: N802
        context: Context,
    ) -> gw.ListCallsReply:
        if not request.instance:
            await self._invalid(context, "instance is required")
        adopted = self.flow_owners.adopt(self.switch.list_calls(), request.instance, self.clock())
        for call in adopted:
            log.warning(
                "call %s: its IVR has been silent for %.0f s; handed to IVR %s",
                call.call_id,
                self.flow_owners.timeout_s,
                request.instance,
            )
        return gw.ListCallsReply(calls=[call_info(c) for c in adopted])

    # ---- call control for agents and supervisors (issue 10) ---------------------------------

    async def _target(
        self, context: Context, kind: int, target: str, allowed: tuple[int, ...]
    ) -> str:
        if kind not in allowed:
            names = " or ".join(TARGET_KINDS[k].upper() for k in allowed)
            await self._invalid(context, f"target_kind must be {names}")
        if not target:
            await self._invalid(context, "target is required")
        if kind == gw.TARGET_KIND_QUEUE:
            if len(target) > 64 or not target.replace("-", "").replace("_", "").isalnum():
                await self._invalid(context, f"queue {target!r} is not a queue name")
        elif len(target) > 32 or not set(target.removeprefix("+")) <= DIAL_CHARS:
            await self._invalid(context, f"target {target!r} must be 1-32 of the digits 0-9 * #")
        return TARGET_KINDS[kind]

    async def _call_reply(
        self, context: Context, command: Callable[[], Awaitable[Call] | Call]
    ) -> gw.CallReply:
        """Run a command that returns the call; its errors as gRPC codes."""
        try:
            result = command()
            call = await result if inspect.isawaitable(result) else result
        except (CallGone, CommandError) as exc:
            await self._fail(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def _ring(
        self,
        context: Context,
        request: TargetRequest,
        allowed: tuple[gw.TargetKind.ValueType, ...],
        command: Callable[[str, str, str, str, float], Awaitable[Attempt]],
    ) -> Attempt:
        """A command that rings a target for the call (transfer, consult, add a party)."""
        kind = await self._target(context, request.target_kind, request.target, allowed)
        try:
            return await command(
                request.call_id,
                kind,
                request.target,
                request.by_agent_id,
                (request.ring_timeout_ms or 20000) / 1000,
            )
        except (CallGone, CommandError) as exc:
            await self._fail(context, exc)

    async def Hold(self, request: gw.HoldRequest, context: Context) -> gw.CallReply:  # noqa: N802
        return await self._call_reply(
            context, lambda: self.switch.control.hold(request.call_id, request.leg_id)
        )

    async def Resume(self, request: gw.HoldRequest, context: Context) -> gw.CallReply:  # noqa: N802
        return await self._call_reply(
            context, lambda: self.switch.control.resume(request.call_id, request.leg_id)
        )

    async def Transfer(  # noqa: N802
        self, request: gw.TransferRequest, context: Context
    ) -> gw.TransferReply:
        attempt = await self._ring(context, request, ALL_TARGETS, self.switch.control.transfer)
        return gw.TransferReply(
            call_id=request.call_id,
            result=CONNECT_RESULTS.get(attempt.outcome, gw.CONNECT_RESULT_REJECTED),
            leg_id=attempt.leg.leg_id if attempt.leg is not None else "",
            detail=attempt.detail,
        )

    async def Consult(  # noqa: N802
        self, request: gw.ConsultRequest, context: Context
    ) -> gw.ConsultReply:
        attempt = await self._ring(context, request, PARTY_TARGETS, self.switch.control.consult)
        return gw.ConsultReply(
            call_id=request.call_id,
            consult_leg_id=attempt.leg.leg_id if attempt.leg is not None else "",
            result=CONNECT_RESULTS.get(attempt.outcome, gw.CONNECT_RESULT_REJECTED),
            detail=attempt.detail,
        )

    async def EndConsult(  # noqa: N802
        self, request: gw.EndConsultRequest, context: Context
    ) -> gw.CallReply:
        action = CONSULT_ACTIONS.get(request.action)
        if action is None:
            await self._invalid(context, "action must be COMPLETE, CANCEL or SWAP")
        return await self._call_reply(
            context, lambda: self.switch.control.end_consult(request.call_id, action)
        )

    async def AddParty(  # noqa: N802
        self, request: gw.AddPartyRequest, context: Context
    ) -> gw.AddPartyReply:
        attempt = await self._ring(context, request, PARTY_TARGETS, self.switch.control.add_party)
        return gw.AddPartyReply(
            call_id=request.call_id,
            result=CONNECT_RESULTS.get(attempt.outcome, gw.CONNECT_RESULT_REJECTED),
            leg_id=attempt.leg.leg_id if attempt.leg is not None else "",
            parties=self.switch.control.parties_in(request.call_id),
            detail=attempt.detail,
        )

    async def RemoveParty(  # noqa: N802
        self, request: gw.RemovePartyRequest, context: Context
    ) -> gw.CallReply:
        if not request.leg_id:
            await self._invalid(context, "leg_id is required")
        return await self._call_reply(
            context, lambda: self.switch.control.remove_party(request.call_id, request.leg_id)
        )

    async def Monitor(  # noqa: N802
        self, request: gw.MonitorRequest, context: Context
    ) -> gw.MonitorReply:
        mode = MONITOR_MODES.get(request.mode)
        if mode is None:
            await self._invalid(context, "mode must be LISTEN, WHISPER or BARGE")
        if not request.supervisor_id:
            await self._invalid(context, "supervisor_id is required")
        if request.endpoint and not request.endpoint.isdigit():
            await self._invalid(context, f"endpoint {request.endpoint!r} is not an extension")
        try:
            call = self.switch.registry.get(request.call_id)
            monitored = any(p.role is Role.SUPERVISOR for p in call.others)
            if not monitored and not request.endpoint:
                await self._invalid(context, "endpoint (the supervisor's extension) is required")
            attempt, leg_id = await self.switch.control.monitor(
                request.call_id,
                mode,
                request.supervisor_id,
                request.endpoint,
                (request.ring_timeout_ms or 20000) / 1000,
            )
        except (CallGone, CommandError) as exc:
            await self._fail(context, exc)
        return gw.MonitorReply(
            call_id=request.call_id,
            leg_id=leg_id,
            result=CONNECT_RESULTS.get(attempt.outcome, gw.CONNECT_RESULT_REJECTED),
            mode=request.mode,
            detail=attempt.detail,
        )

    async def StopMonitor(  # noqa: N802
        self, request: gw.StopMonitorRequest, context: Context
    ) -> gw.CallReply:
        return await self._call_reply(
            context, lambda: self.switch.control.stop_monitor(request.call_id, request.leg_id)
        )

    async def Mute(self, request: gw.MuteRequest, context: Context) -> gw.CallReply:  # noqa: N802
        return await self._call_reply(
            context,
            lambda: self.switch.control.mute(request.call_id, request.leg_id, request.muted),
        )

    async def SendDigits(  # noqa: N802
        self, request: gw.SendDigitsRequest, context: Context
    ) -> gw.CallReply:
        digits = request.digits.upper()
        if not digits or len(digits) > 32 or not set(digits) <= DTMF_CHARS:
            await self._invalid(context, "digits must be 1-32 of 0-9 * # A-D")
        return await self._call_reply(
            context,
            lambda: self.switch.control.send_digits(request.call_id, digits, request.leg_id),
        )

    async def DialOut(  # noqa: N802
        self, request: gw.DialOutRequest, context: Context
    ) -> gw.DialOutReply:
        number, endpoint, trunk = request.number, request.endpoint, request.trunk
        if not request.agent_id:
            await self._invalid(context, "agent_id is required")
        if not endpoint or not endpoint.isdigit() or len(endpoint) > 16:
            await self._invalid(context, "endpoint (the agent's extension) must be digits")
        if not number or len(number) > 32 or not set(number.removeprefix("+")) <= DIAL_CHARS:
            await self._invalid(context, "number must be 1-32 of the digits 0-9 * # (leading +)")
        if trunk and trunk not in self.switch.trunks:
            have = ", ".join(sorted(self.switch.trunks)) or "none configured"
            await self._invalid(context, f"trunk {trunk!r} cannot place calls (have: {have})")
        allowed = request.dial_class or "internal"
        if allowed not in CLASSES:
            await self._invalid(context, f"dial_class must be one of {', '.join(CLASSES)}")
        wanted = self.dial_plan.classify(number)
        if wanted is None:
            await self._invalid(context, f"number {number} matches no class of the dial plan")
        if not self.dial_plan.allows(allowed, wanted):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"number {number} is {wanted}; this role may dial up to {allowed}",
            )
        kind = TargetKind.EXTENSION if wanted == "internal" and not trunk else TargetKind.NUMBER
        timeout_ms = request.ring_timeout_ms or self.dialout_ring_timeout_ms
        attempt, call_id = await self.switch.control.dial_out(
            request.agent_id, endpoint, kind, number, trunk, timeout_ms / 1000
        )
        return gw.DialOutReply(
            call_id=call_id,
            result=CONNECT_RESULTS.get(attempt.outcome, gw.CONNECT_RESULT_REJECTED),
            detail=attempt.detail,
        )
