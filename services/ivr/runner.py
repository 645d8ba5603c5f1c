"""Runs one call through its flow by commanding the gateway, then hands it to the ACD."""

from __future__ import annotations

import logging

import grpc
from prometheus_client import Counter

from hotline.v1 import acd_pb2, acd_pb2_grpc, gateway_pb2_grpc
from hotline.v1 import gateway_pb2 as gw
from ivr.flows import Flow, Route

log = logging.getLogger(__name__)

CALLS = Counter("hotline_ivr_calls_total", "Calls taken by a flow", ["flow", "outcome"])


class CallerGone(Exception):
    """The caller hung up while the flow was running."""


class FlowRunner:
    def __init__(
        self, gateway: gateway_pb2_grpc.CallControlAsyncStub, acd: acd_pb2_grpc.AcdAsyncStub
    ) -> None:
        self.gateway, self.acd = gateway, acd

    async def run(self, flow: Flow, call_id: str, ani: str, dnis: str) -> str:
        """Answer, greet, ask, enqueue. Returns the outcome (queue name, or why it stopped)."""
        try:
            await self.gateway.Answer(gw.AnswerRequest(call_id=call_id))
            keyed = False  # the caller keyed a digit over the greeting
            if flow.greeting:
                played = await self.gateway.Play(
                    gw.PlayRequest(call_id=call_id, prompt=flow.greeting, barge_in=True)
                )
                keyed = not played.completed and bool(played.digit)
            route, digits = await self._menu(flow, call_id, keyed)
            if route is None:
                await self.gateway.Hangup(
                    gw.HangupRequest(call_id=call_id, reason="no valid menu choice")
                )
                CALLS.labels(flow.name, "no-choice").inc()
                return "no-choice"
            reply = await self.acd.Enqueue(
                acd_pb2.EnqueueRequest(
                    call_id=call_id,
                    queue=route.queue,
                    priority=route.priority,
                    ani=ani,
                    dnis=dnis,
                    data={"menu": digits, "flow": flow.name},
                )
            )
            log.info(
                "call %s: menu %r -> queue %s position %d",
                call_id,
                digits,
                route.queue,
                reply.position,
            )
            CALLS.labels(flow.name, "queued").inc()
            return route.queue
        except CallerGone:
            CALLS.labels(flow.name, "caller-gone").inc()
            return "caller-gone"
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # the call ended between commands
                CALLS.labels(flow.name, "caller-gone").inc()
                return "caller-gone"
            CALLS.labels(flow.name, "error").inc()
            log.error(
                "call %s: flow %s failed: %s %s", call_id, flow.name, exc.code().name, exc.details()
            )
            return "error"

    async def _menu(self, flow: Flow, call_id: str, keyed: bool) -> tuple[Route | None, str]:
        """The caller's choice. With `keyed` (a digit already waits at the gateway) the first
        menu prompt is not asked for: the gateway would stop it before its first frame
        (barge-in with a digit waiting), so the command would cost a round trip for nothing."""
        menu = flow.menu
        for attempt in range(menu.attempts):
            if attempt or not keyed:
                await self.gateway.Play(
                    gw.PlayRequest(call_id=call_id, prompt=menu.prompt, barge_in=True)
                )
            got = await self.gateway.CollectDigits(
                gw.CollectDigitsRequest(call_id=call_id, max_digits=1, timeout_ms=menu.timeout_ms)
            )
            if got.reason == "hangup":
                raise CallerGone(call_id)
            route = flow.route_for(got.digits)
            if route is not None:
                return route, got.digits
        return menu.default, ""
