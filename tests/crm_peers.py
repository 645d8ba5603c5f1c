"""A gateway `CallControl` peer for the CRM's tests: a small but honest model of live calls
(held, muted, consulting, conference parties) that refuses what a real gateway refuses, on a
real mTLS gRPC server. The gateway's own behaviour is tested in its own suites."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc
from tests import tls as test_tls

#: the gateway's own method table: the fake refuses the CRM what the real gateway would.
CALLERS = CallControlServicer.CALLERS

_CLASS_RANK = {"internal": 0, "local": 1, "long_distance": 2, "international": 3}


def number_class(number: str) -> str:
    """A plain dial plan: 00… international, 0… long distance, up to 5 digits internal."""
    if number.startswith("00"):
        return "international"
    if number.startswith("0"):
        return "long_distance"
    return "internal" if len(number) <= 5 else "local"


@dataclass
class LiveCall:
    held: bool = False
    muted: bool = False
    consult_leg: str = ""
    parties: int = 2
    digits: str = ""


class FakeCallControl(gateway_pb2_grpc.CallControlServicer):
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: dict[str, LiveCall] = {}
        self.requests: list[tuple[str, Any]] = []
        self._legs = itertools.count(1)

    def leg(self) -> str:
        return f"leg-{next(self._legs)}"

    async def _live(self, name: str, request: Any, context: Any) -> LiveCall:
        self.requests.append((name, request))
        call = self.calls.get(request.call_id)
        if call is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"call {request.call_id} does not exist or has ended"
            )
        assert call is not None
        return call

    async def Hold(self, request: gw.HoldRequest, context: Any) -> gw.CallReply:
        call = await self._live("Hold", request, context)
        call.held = True
        return gw.CallReply(call_id=request.call_id, state="held")

    async def Resume(self, request: gw.HoldRequest, context: Any) -> gw.CallReply:
        call = await self._live("Resume", request, context)
        if not call.held:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "call is not on hold")
        call.held = False
        return gw.CallReply(call_id=request.call_id, state="bridged")

    async def Transfer(self, request: gw.TransferRequest, context: Any) -> gw.TransferReply:
        await self._live("Transfer", request, context)
        if request.target == "8999":
            return gw.TransferReply(
                call_id=request.call_id,
                result=gw.CONNECT_RESULT_NO_ANSWER,
                detail="8999 did not answer",
            )
        del self.calls[request.call_id]  # the agent's part of the call is over
        return gw.TransferReply(
            call_id=request.call_id, result=gw.CONNECT_RESULT_ANSWERED, leg_id=self.leg()
        )

    async def Consult(self, request: gw.ConsultRequest, context: Any) -> gw.ConsultReply:
        call = await self._live("Consult", request, context)
        if call.consult_leg:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a consult is in progress")
        call.held, call.consult_leg = True, self.leg()
        return gw.ConsultReply(
            call_id=request.call_id,
            consult_leg_id=call.consult_leg,
            result=gw.CONNECT_RESULT_ANSWERED,
        )

    async def EndConsult(self, request: gw.EndConsultRequest, context: Any) -> gw.CallReply:
        call = await self._live("EndConsult", request, context)
        if not call.consult_leg:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no consult in progress")
        if request.action == gw.CONSULT_ACTION_COMPLETE:
            del self.calls[request.call_id]
            return gw.CallReply(call_id=request.call_id, state="transferred")
        if request.action == gw.CONSULT_ACTION_CANCEL:
            call.held, call.consult_leg = False, ""
        return gw.CallReply(call_id=request.call_id, state="bridged")

    async def AddParty(self, request: gw.AddPartyRequest, context: Any) -> gw.AddPartyReply:
        call = await self._live("AddParty", request, context)
        call.parties += 1
        return gw.AddPartyReply(
            call_id=request.call_id,
            result=gw.CONNECT_RESULT_ANSWERED,
            leg_id=self.leg(),
            parties=call.parties,
        )

    async def RemoveParty(self, request: gw.RemovePartyRequest, context: Any) -> gw.CallReply:
        call = await self._live("RemoveParty", request, context)
        call.parties -= 1
        return gw.CallReply(call_id=request.call_id, state="conference")

    async def Mute(self, request: gw.MuteRequest, context: Any) -> gw.CallReply:
        call = await self._live("Mute", request, context)
        call.muted = request.muted
        return gw.CallReply(call_id=request.call_id, state="bridged")

    async def SendDigits(self, request: gw.SendDigitsRequest, context: Any) -> gw.CallReply:
        call = await self._live("SendDigits", request, context)
        call.digits += request.digits
        return gw.CallReply(call_id=request.call_id, state="bridged")

    async def Hangup(self, request: gw.HangupRequest, context: Any) -> gw.CallReply:
        await self._live("Hangup", request, context)
        del self.calls[request.call_id]
        return gw.CallReply(call_id=request.call_id, state="ended")

    async def DialOut(self, request: gw.DialOutRequest, context: Any) -> gw.DialOutReply:
        self.requests.append(("DialOut", request))
        wanted = number_class(request.number)
        if _CLASS_RANK[wanted] > _CLASS_RANK.get(request.dial_class, -1):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{request.number} is {wanted}; class {request.dial_class} may not dial it",
            )
        call_id = f"out-{next(self._legs)}"
        self.calls[call_id] = LiveCall()
        return gw.DialOutReply(call_id=call_id, result=gw.CONNECT_RESULT_ANSWERED)


def gateway_server(fake: FakeCallControl) -> tuple[grpc.aio.Server, int]:
    """The fake on a loopback mTLS server of the `gateway` identity; (server, port)."""
    return test_tls.server(
        "gateway", gateway_pb2_grpc.add_CallControlServicer_to_server, fake, CALLERS
    )
