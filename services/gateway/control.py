"""The `hotline.v1.CallControl` gRPC API: what IVR and ACD may ask the gateway to do.

Errors are explicit: an unknown or ended call is NOT_FOUND, a command that does not fit the
call's state is FAILED_PRECONDITION, a bad argument is INVALID_ARGUMENT — with a message.
"""
from __future__ import annotations

import grpc
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc

from gateway.calls import CallGone
from gateway.switch import CommandError, PromptNotFound, Switch


class CallControlService(gateway_pb2_grpc.CallControlServicer):
    def __init__(self, switch: Switch) -> None:
        self.switch = switch

    async def _guard(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, CallGone):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"call {exc.args[0]} does not exist "
                                "or has ended")
        if isinstance(exc, PromptNotFound):
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    async def Answer(self, request, context):  # noqa: N802, ANN001
        try:
            call = self.switch.answer(request.call_id)
        except (CallGone, CommandError) as exc:
            await self._guard(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def Play(self, request, context):  # noqa: N802, ANN001
        if not request.prompt:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt is required")
        try:
            completed, digit = await self.switch.play(request.call_id, request.prompt,
                                                      request.barge_in, request.loop)
        except (CallGone, CommandError, PromptNotFound) as exc:
            await self._guard(context, exc)
        return gw.PlayReply(call_id=request.call_id, completed=completed, digit=digit)

    async def StopPlay(self, request, context):  # noqa: N802, ANN001
        try:
            call = self.switch.stop_play(request.call_id)
        except CallGone as exc:
            await self._guard(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def CollectDigits(self, request, context):  # noqa: N802, ANN001
        if request.max_digits < 0 or request.timeout_ms < 0 or request.inter_digit_timeout_ms < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "max_digits and timeouts must not be negative")
        try:
            digits, reason = await self.switch.collect(
                request.call_id, request.max_digits, request.timeout_ms,
                request.inter_digit_timeout_ms, request.terminators)
        except (CallGone, CommandError) as exc:
            await self._guard(context, exc)
        return gw.CollectDigitsReply(call_id=request.call_id, digits=digits, reason=reason)

    async def ConnectToEndpoint(self, request, context):  # noqa: N802, ANN001
        if not request.endpoint:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "endpoint is required")
        timeout_s = (request.ring_timeout_ms or 20000) / 1000
        try:
            result, leg_id, detail = await self.switch.connect(
                request.call_id, request.endpoint, timeout_s, request.agent_id, request.queue)
        except CallGone:
            return gw.ConnectReply(call_id=request.call_id,
                                   result=gw.CONNECT_RESULT_CALLER_GONE, detail="call has ended")
        except CommandError as exc:
            await self._guard(context, exc)
        return gw.ConnectReply(call_id=request.call_id, result=result, leg_id=leg_id,
                               detail=detail)

    async def Originate(self, request, context):  # noqa: N802, ANN001
        number, policy = request.number, request.answer_policy or "after_dial"
        if not number or len(number) > 32 or not set(number) <= set("0123456789*#"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "number must be 1-32 of the digits 0-9 * #")
        if policy not in ("after_dial", "polarity"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "answer_policy must be after_dial or polarity")
        try:
            result, call, detail = await self.switch.originate(
                request.trunk or "analog", number, policy, (request.timeout_ms or 30000) / 1000)
        except CommandError as exc:
            await self._guard(context, exc)
        return gw.OriginateReply(call_id=call.call_id if call else "", result=result,
                                 detail=detail)

    async def Hangup(self, request, context):  # noqa: N802, ANN001
        try:
            call = self.switch.hangup(request.call_id, request.reason)
        except CallGone as exc:
            await self._guard(context, exc)
        return gw.CallReply(call_id=call.call_id, state=call.state.value)

    async def ListCalls(self, request, context):  # noqa: N802, ANN001
        return gw.ListCallsReply(calls=self.switch.list_calls())
