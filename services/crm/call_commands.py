"""The agent's commands to a live call, sent to the gateway's `CallControl` over the CRM's
mTLS channel: hold, transfer, consult, conference, mute, digits, hang up, click-to-dial.

The gateway owns every leg and decides what is possible ("not bridged", "no consult in
progress"); this is a thin typed front of its stub that turns a refusal into the HTTP error
the desk shows (crm.peer_errors). Commands that ring someone wait for the answer, so their
deadline is the ring timeout plus a margin.
"""

from __future__ import annotations

from typing import Any

import grpc

from crm.peer_errors import GATEWAY_STATUS, PeerError
from hotline.v1 import gateway_pb2 as gw
from hotline.v1 import gateway_pb2_grpc

#: deadline of a command that rings nobody.
TIMEOUT_S = 5.0
#: extra time over a ring timeout before the CRM stops waiting for the gateway's answer.
RING_MARGIN_S = 5.0
DEFAULT_RING_TIMEOUT_S = 30.0

TARGET_KINDS = {
    "extension": gw.TARGET_KIND_EXTENSION,
    "queue": gw.TARGET_KIND_QUEUE,
    "number": gw.TARGET_KIND_NUMBER,
}
MONITOR_MODES = {
    "listen": gw.MONITOR_MODE_LISTEN,
    "whisper": gw.MONITOR_MODE_WHISPER,
    "barge": gw.MONITOR_MODE_BARGE,
}
#: the supervisor's phone rings this long when they join a call
MONITOR_RING_S = 20.0
CONSULT_ACTIONS = {
    "complete": gw.CONSULT_ACTION_COMPLETE,
    "cancel": gw.CONSULT_ACTION_CANCEL,
    "swap": gw.CONSULT_ACTION_SWAP,
}


def connect_result(result: gw.ConnectResult.ValueType) -> str:
    """`CONNECT_RESULT_NO_ANSWER` -> "no_answer"."""
    return gw.ConnectResult.Name(result).removeprefix("CONNECT_RESULT_").lower()


class CallCommands:
    """Typed front of the `hotline.v1.CallControl` stub with HTTP-shaped errors."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = gateway_pb2_grpc.CallControlStub(channel)

    async def hold(self, call_id: str) -> gw.CallReply:
        reply: gw.CallReply = await self._call(self._stub.Hold, gw.HoldRequest(call_id=call_id))
        return reply

    async def resume(self, call_id: str) -> gw.CallReply:
        reply: gw.CallReply = await self._call(self._stub.Resume, gw.HoldRequest(call_id=call_id))
        return reply

    async def transfer(
        self, call_id: str, target_kind: str, target: str, agent_id: str, ring_s: float
    ) -> gw.TransferReply:
        """Blind transfer: the caller goes to the target, the agent's leg leaves."""
        reply: gw.TransferReply = await self._ring(
            self._stub.Transfer, gw.TransferRequest, call_id, target_kind, target, agent_id, ring_s
        )
        return reply

    async def consult(
        self, call_id: str, target_kind: str, target: str, agent_id: str, ring_s: float
    ) -> gw.ConsultReply:
        """The caller is held and the agent is put through to the target."""
        reply: gw.ConsultReply = await self._ring(
            self._stub.Consult, gw.ConsultRequest, call_id, target_kind, target, agent_id, ring_s
        )
        return reply

    async def end_consult(self, call_id: str, action: str) -> gw.CallReply:
        request = gw.EndConsultRequest(call_id=call_id, action=CONSULT_ACTIONS[action])
        reply: gw.CallReply = await self._call(self._stub.EndConsult, request)
        return reply

    async def add_party(
        self, call_id: str, target_kind: str, target: str, agent_id: str, ring_s: float
    ) -> gw.AddPartyReply:
        """The target is rung into the call, which becomes a mixed room."""
        reply: gw.AddPartyReply = await self._ring(
            self._stub.AddParty, gw.AddPartyRequest, call_id, target_kind, target, agent_id, ring_s
        )
        return reply

    async def _ring(
        self,
        method: Any,
        message: Any,
        call_id: str,
        target_kind: str,
        target: str,
        agent_id: str,
        ring_s: float,
    ) -> Any:
        """A command that rings a target (the three requests share their fields)."""
        request = message(
            call_id=call_id,
            target_kind=TARGET_KINDS[target_kind],
            target=target,
            by_agent_id=agent_id,
            ring_timeout_ms=int(ring_s * 1000),
        )
        return await self._call(method, request, ring_s)

    async def remove_party(self, call_id: str, leg_id: str) -> gw.CallReply:
        request = gw.RemovePartyRequest(call_id=call_id, leg_id=leg_id)
        reply: gw.CallReply = await self._call(self._stub.RemoveParty, request)
        return reply

    async def mute(self, call_id: str, muted: bool) -> gw.CallReply:
        reply: gw.CallReply = await self._call(
            self._stub.Mute, gw.MuteRequest(call_id=call_id, muted=muted)
        )
        return reply

    async def send_digits(self, call_id: str, digits: str) -> gw.CallReply:
        reply: gw.CallReply = await self._call(
            self._stub.SendDigits, gw.SendDigitsRequest(call_id=call_id, digits=digits)
        )
        return reply

    async def hangup(self, call_id: str, reason: str, by_agent: bool = False) -> gw.CallReply:
        reply: gw.CallReply = await self._call(
            self._stub.Hangup,
            gw.HangupRequest(call_id=call_id, reason=reason, by_agent=by_agent),
        )
        return reply

    async def monitor(
        self, call_id: str, mode: str, supervisor_id: str, endpoint: str
    ) -> gw.MonitorReply:
        """A supervisor joins the call from `endpoint` (rung first): listen, whisper or barge;
        called again with another mode, it switches."""
        request = gw.MonitorRequest(
            call_id=call_id,
            mode=MONITOR_MODES[mode],
            supervisor_id=supervisor_id,
            endpoint=endpoint,
            ring_timeout_ms=int(MONITOR_RING_S * 1000),
        )
        reply: gw.MonitorReply = await self._call(self._stub.Monitor, request, MONITOR_RING_S)
        return reply

    async def stop_monitor(self, call_id: str, leg_id: str) -> gw.CallReply:
        request = gw.StopMonitorRequest(call_id=call_id, leg_id=leg_id)
        reply: gw.CallReply = await self._call(self._stub.StopMonitor, request)
        return reply

    async def dial_out(
        self,
        agent_id: str,
        endpoint: str,
        number: str,
        dial_class: str,
        customer_id: str,
        ring_s: float,
    ) -> gw.DialOutReply:
        request = gw.DialOutRequest(
            agent_id=agent_id,
            endpoint=endpoint,
            number=number,
            dial_class=dial_class,
            ring_timeout_ms=int(ring_s * 1000),
            customer_id=customer_id,
        )
        # The agent's phone rings first, then the customer's: two ring timeouts at most.
        reply: gw.DialOutReply = await self._call(self._stub.DialOut, request, 2 * ring_s)
        return reply

    @staticmethod
    async def _call(method: Any, request: Any, ring_s: float = 0.0) -> Any:
        timeout = ring_s + RING_MARGIN_S if ring_s else TIMEOUT_S
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "", timeout) from None


class GatewayError(PeerError):
    """The gateway refused a call command (or could not be reached)."""

    def __init__(self, code: grpc.StatusCode, detail: str, timeout_s: float) -> None:
        super().__init__("gateway", code, detail, GATEWAY_STATUS, timeout_s)
