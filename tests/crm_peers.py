"""Peers of the CRM for its tests, on real mTLS gRPC servers behind the real method tables: a
gateway `CallControl` with a small but honest model of live calls (held, muted, consulting,
conference parties) that refuses what a real gateway refuses, and a recorder that plays back
what it holds. The gateway's and the recorder's own behaviour is tested in their suites."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from common import rpc
from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc, recorder_pb2, recorder_pb2_grpc
from recorder.servicer import RecorderService
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


class FakeRecorder(recorder_pb2_grpc.RecorderServicer):
    """Playback of the recordings in `stored` (id -> WAV bytes), in 1000-byte chunks."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}

    async def Fetch(
        self, request: recorder_pb2.FetchRequest, context: Any
    ) -> AsyncIterator[recorder_pb2.FetchChunk]:
        data = self.stored.get(request.recording_id)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no recording {request.recording_id}")
        assert data is not None
        for at in range(0, len(data), 1000):
            yield recorder_pb2.FetchChunk(
                data=data[at : at + 1000], total_bytes=len(data), status="complete"
            )


def recorder_server(fake: FakeRecorder) -> tuple[grpc.aio.Server, int]:
    return test_tls.server(
        "recorder", recorder_pb2_grpc.add_RecorderServicer_to_server, fake, RecorderService.CALLERS
    )


def nowhere(caller: str, peer: str) -> grpc.aio.Channel:
    """A channel from `caller` to a loopback port nobody listens on: a peer a test never
    reaches (or one that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    return rpc.channel(address, test_tls.tls(caller), peer)
