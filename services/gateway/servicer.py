"""The `hotline.v1.CallControl` gRPC API: what IVR and ACD may ask the gateway to do.

Errors are explicit: an unknown or ended call is NOT_FOUND, a command that does not fit the
call's state is FAILED_PRECONDITION, a bad argument is INVALID_ARGUMENT - with a message.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from common.rpc import Context, callers
from gateway.core.calls import Call, CallGone
from gateway.core.contracts import Outcome
from gateway.core.prompts import PromptNotFound
from gateway.core.switch import CommandError, Switch
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc

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
DIGITS = frozenset("0123456789")
ANSWER_POLICIES = ("after_dial", "polarity")


def call_info(call: Call) -> gw.CallInfo:
    return gw.CallInfo(
        call_id=call.call_id,
        state=call.state.value,
        ani=call.ani,
        dnis=call.dnis,
        channel=call.channel,
        bridged_to=call.agent_id,
        started_at_ms=int(call.offered_wall * 1000),
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

    def __init__(self, switch: Switch) -> None:
        self.switch = switch

    @staticmethod
    async def _fail(context: Context, exc: Exception) -> NoReturn:
        if isinstance(exc, CallGone):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"call {exc.args[0]} does not exist or has ended"
            )
        if isinstance(exc, PromptNotFound):
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("abort returned")  # grpc's abort always raises

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
            call = self.switch.answer(request.call_id)
        except (CallGone, CommandError) as exc:
            await self._fail(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def Play(
        self,
        request: gw.PlayRequest,  # noqa: N802
        context: Context,
    ) -> gw.PlayReply:
        if not request.prompt:
            await self._invalid(context, "prompt is required")
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
        try:
            call = self.switch.hangup(request.call_id, request.reason)
        except CallGone as exc:
            await self._fail(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def ListCalls(
        self,
        request: gw.ListCallsRequest,  # noqa: N802
        context: Context,
    ) -> gw.ListCallsReply:
        return gw.ListCallsReply(calls=[call_info(c) for c in self.switch.list_calls()])

    # The call-control contract (issue 10) lands before its implementation: until then each
    # answers UNIMPLEMENTED, as gRPC's generated base class would.

    async def Hold(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Hold is not implemented yet")

    async def Resume(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Resume is not implemented yet")

    async def Transfer(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Transfer is not implemented yet")

    async def Consult(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Consult is not implemented yet")

    async def EndConsult(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "EndConsult is not implemented yet")

    async def AddParty(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "AddParty is not implemented yet")

    async def RemoveParty(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "RemoveParty is not implemented yet")

    async def Monitor(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Monitor is not implemented yet")

    async def StopMonitor(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "StopMonitor is not implemented yet")

    async def Mute(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Mute is not implemented yet")

    async def SendDigits(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "SendDigits is not implemented yet")

    async def DialOut(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "DialOut is not implemented yet")
