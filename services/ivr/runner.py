"""Runs one call through its flow by commanding the gateway, then hands it to the ACD.

The hand-off outlives a restart of the ACD: an ACD that cannot be reached (restarting, or a
replica that is no longer the active one, UNAVAILABLE) is waited for and asked again for up to
`acd_wait_s`, the caller on hold music meanwhile; only then is the caller told and the call
ended. Before, a caller who chose a queue during the second an ACD restarts was left on a
silent line until they hung up (16 callers in the fault soak's ACD kill).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client import Counter

from common import error_info
from hotline.v1 import acd_pb2, acd_pb2_grpc, gateway_pb2_grpc
from hotline.v1 import gateway_pb2 as gw
from ivr.flows import Flow, Route

log = logging.getLogger(__name__)

CALLS = Counter("hotline_ivr_calls_total", "Calls taken by a flow", ["flow", "outcome"])
WAITED = Counter(
    "hotline_ivr_acd_waits_total",
    "Calls whose hand-off to the ACD took longer than HOLD_AFTER_S (the caller heard hold music)",
)
PROMPTS_MISSING = Counter(
    "hotline_ivr_prompts_missing_total",
    "Prompts a flow named that the gateway does not have (skipped: the flow went on)",
    ["flow", "prompt"],
)

#: what a caller waiting for the ACD hears (the ACD's own hold music, built by `ivr.prompts`)
WAIT_PROMPT = "hold"
#: what a caller hears before the call ends because no ACD could take it
UNAVAILABLE_PROMPT = "unavailable"
#: how long a hand-off to the ACD may take before the caller is put on hold music
HOLD_AFTER_S = 0.5
#: pause between two attempts when the ACD itself answers UNAVAILABLE (not the active replica)
RETRY_S = 0.25
#: how long the answer to an offered call waits for a gateway the IVR cannot reach yet: a
#: gateway that has just restarted offers calls before this IVR's channel to it has tried
#: again (every 2 s at most, common.rpc.RECONNECT); without waiting, the Answer failed at once
#: and the caller was left unanswered until the gateway gave up (39 callers in a fault soak)
GATEWAY_WAIT_S = 10.0


class CallerGone(Exception):
    """The caller hung up while the flow was running."""


class AcdRefused(Exception):
    """The ACD answered the hand-off with an error no retry mends (an unknown queue, say)."""


class FlowRunner:
    def __init__(
        self,
        gateway: gateway_pb2_grpc.CallControlAsyncStub,
        acd: acd_pb2_grpc.AcdAsyncStub,
        acd_wait_s: float = 20.0,
        instance: str = "",
    ) -> None:
        self.gateway, self.acd = gateway, acd
        self.acd_wait_s = acd_wait_s
        #: this IVR's name, given to the gateway with each answer (CallInfo.flow_owner)
        self.instance = instance

    async def run(self, flow: Flow, call_id: str, ani: str, dnis: str) -> str:
        """Answer, greet, ask, enqueue. Returns the outcome (queue name, or why it stopped)."""
        try:
            await self.gateway.Answer(
                gw.AnswerRequest(call_id=call_id, flow_owner=self.instance),
                timeout=GATEWAY_WAIT_S,
                wait_for_ready=True,
            )
            keyed = False  # the caller keyed a digit over the greeting
            if flow.greeting:
                played = await self._play(flow, call_id, flow.greeting)
                keyed = not played.completed and bool(played.digit)
            route, digits = await self._menu(flow, call_id, keyed)
            if route is None:
                await self.gateway.Hangup(
                    gw.HangupRequest(
                        call_id=call_id, reason="no valid menu choice", flow_owner=self.instance
                    )
                )
                CALLS.labels(flow.name, "no-choice").inc()
                return "no-choice"
            request = acd_pb2.EnqueueRequest(
                call_id=call_id,
                queue=route.queue,
                priority=route.priority,
                ani=ani,
                dnis=dnis,
                data={"menu": digits, "flow": flow.name},
            )
            try:
                reply = await self._enqueue(request)
            except AcdRefused as exc:
                await self._turn_away(call_id, f"the ACD refused the call: {exc}")
                CALLS.labels(flow.name, "acd-refused").inc()
                return "acd-refused"
            if reply is None:
                await self._turn_away(
                    call_id, f"no ACD could take the call within {self.acd_wait_s:.0f} s"
                )
                CALLS.labels(flow.name, "acd-unavailable").inc()
                return "acd-unavailable"
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
            if _call_gone(exc):  # the call ended between commands
                CALLS.labels(flow.name, "caller-gone").inc()
                return "caller-gone"
            if error_info.reason_of(exc) == error_info.FLOW_TAKEN_OVER:
                # this IVR was silent past the owner timeout (a stalled loop) and another
                # adopted the call, or the ACD has it: that flow goes on, this one stops
                log.warning("call %s: flow %s stopped: %s", call_id, flow.name, exc.details())
                CALLS.labels(flow.name, "taken-over").inc()
                return "taken-over"
            CALLS.labels(flow.name, "error").inc()
            why = f"the IVR's flow failed: {exc.code().name} {exc.details()}"
            log.error("call %s: flow %s: %s", call_id, flow.name, why)
            await self._end_if_still_ours(call_id, why)
            return "error"

    async def _end_if_still_ours(self, call_id: str, why: str) -> None:
        """A flow that failed must not leave its caller on a silent line: if the call is still
        this IVR's (answered, unbridged, naming it: the ACD has not commanded it), the caller
        hears the apology and the call ends. A call the ACD has since taken, or a gateway that
        cannot say, is left alone."""
        try:
            calls = (await self.gateway.ListCalls(gw.ListCallsRequest(), timeout=5)).calls
            call = next((c for c in calls if c.call_id == call_id), None)
            if (
                call is None
                or not self.instance
                or call.flow_owner != self.instance
                or call.state != "answered"
                or call.bridged_to
            ):
                return
            await self._turn_away(call_id, why)
        except grpc.aio.AioRpcError as exc:
            # the flow's failure is logged already (a dead gateway ends its calls anyway)
            log.info("call %s: not ended after its flow failed: %s", call_id, exc.details())

    async def _enqueue(self, request: acd_pb2.EnqueueRequest) -> acd_pb2.EnqueueReply | None:
        """The ACD's answer, or None if no ACD could take the call within `acd_wait_s`; the
        caller hears hold music from `HOLD_AFTER_S` on."""
        attempts = asyncio.ensure_future(self._enqueue_until(request))
        try:
            done, _ = await asyncio.wait({attempts}, timeout=HOLD_AFTER_S)
            if not done:
                WAITED.inc()
                log.info(
                    "call %s: the ACD has not answered in %.1f s; hold music while it waits "
                    "(up to %.0f s)",
                    request.call_id,
                    HOLD_AFTER_S,
                    self.acd_wait_s,
                )
                try:
                    await self.gateway.Play(
                        gw.PlayRequest(
                            call_id=request.call_id,
                            prompt=WAIT_PROMPT,
                            loop=True,
                            flow_owner=self.instance,
                        )
                    )
                except grpc.aio.AioRpcError as exc:
                    if _call_gone(exc) and not attempts.done():
                        raise  # the caller hung up: nothing left to hand over
                    # otherwise never the hand-off's failure: the ACD may have taken the call
                    # and had it bridged before the music reached the gateway ("is bridged")
                    log.log(
                        logging.ERROR if _prompt_missing(exc) else logging.DEBUG,
                        "call %s: no hold music while the ACD is waited for: %s",
                        request.call_id,
                        exc.details(),
                    )
            return await attempts
        finally:
            attempts.cancel()  # the caller hung up meanwhile (or we were stopped)

    async def _enqueue_until(self, request: acd_pb2.EnqueueRequest) -> acd_pb2.EnqueueReply | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.acd_wait_s
        while True:
            try:
                # wait_for_ready: while the channel reconnects to a restarting ACD the call
                # waits for it (up to the deadline) instead of failing at once
                return await self.acd.Enqueue(
                    request, timeout=max(deadline - loop.time(), 0.001), wait_for_ready=True
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.ALREADY_EXISTS:
                    # the call is in a queue already: an attempt the ACD took although its
                    # answer was lost (the connection dropped), or a flow run again for a call
                    # it had queued (an offer redelivered after the IVR died): done either way
                    log.info("call %s: %s", request.call_id, exc.details())
                    await self._hold_again(request.call_id)
                    return acd_pb2.EnqueueReply(call_id=request.call_id, queue=request.queue)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return None
                if code != grpc.StatusCode.UNAVAILABLE:
                    raise AcdRefused(f"{code.name} {exc.details()}") from exc
                if deadline - loop.time() <= RETRY_S:
                    return None
                log.info(
                    "call %s: ACD unavailable (%s); asking again", request.call_id, exc.details()
                )
                await asyncio.sleep(RETRY_S)

    async def _hold_again(self, call_id: str) -> None:
        """A call run through the flow again while queued: the greeting and the menu stopped
        the ACD's hold music, which the ACD started only once; the caller hears it again
        (best effort: a call the ACD has had bridged meanwhile refuses it)."""
        try:
            await self.gateway.Play(
                gw.PlayRequest(
                    call_id=call_id, prompt=WAIT_PROMPT, loop=True, flow_owner=self.instance
                )
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("call %s: hold music not started again: %s", call_id, exc.details())

    async def _turn_away(self, call_id: str, why: str) -> None:
        """No ACD took the call (`why`): say so to the caller and end the call, never leave
        them on a silent line."""
        log.error("call %s: %s; the caller is told and the call ended", call_id, why)
        try:
            await self.gateway.Play(
                gw.PlayRequest(call_id=call_id, prompt=UNAVAILABLE_PROMPT, flow_owner=self.instance)
            )
        except grpc.aio.AioRpcError as exc:
            if not _prompt_missing(exc):
                raise
            log.error("call %s: the apology could not be played: %s", call_id, exc.details())
        await self.gateway.Hangup(
            gw.HangupRequest(call_id=call_id, reason=why, flow_owner=self.instance)
        )

    async def _play(self, flow: Flow, call_id: str, prompt: str) -> gw.PlayReply:
        """A flow's prompt, barge-in allowed. One the gateway does not have is the operator's
        mistake, not the caller's: logged, counted and skipped, so the caller still reaches
        the menu and a queue instead of a silent line."""
        try:
            return await self.gateway.Play(
                gw.PlayRequest(
                    call_id=call_id, prompt=prompt, barge_in=True, flow_owner=self.instance
                )
            )
        except grpc.aio.AioRpcError as exc:
            if not _prompt_missing(exc):
                raise
            PROMPTS_MISSING.labels(flow.name, prompt).inc()
            log.error(
                "call %s: flow %s: %s; going on without it", call_id, flow.name, exc.details()
            )
            return gw.PlayReply(call_id=call_id, completed=True)

    async def _menu(self, flow: Flow, call_id: str, keyed: bool) -> tuple[Route | None, str]:
        """The caller's choice. With `keyed` (a digit already waits at the gateway) the first
        menu prompt is not asked for: the gateway would stop it before its first frame
        (barge-in with a digit waiting), so the command would cost a round trip for nothing."""
        menu = flow.menu
        for attempt in range(menu.attempts):
            if attempt or not keyed:
                await self._play(flow, call_id, menu.prompt)
            got = await self.gateway.CollectDigits(
                gw.CollectDigitsRequest(
                    call_id=call_id,
                    max_digits=1,
                    timeout_ms=menu.timeout_ms,
                    flow_owner=self.instance,
                )
            )
            if got.reason == "hangup":
                raise CallerGone(call_id)
            route = flow.route_for(got.digits)
            if route is not None:
                return route, got.digits
        return menu.default, ""


def _prompt_missing(exc: grpc.aio.AioRpcError) -> bool:
    """The gateway has no such prompt (NOT_FOUND about a prompt: common.error_info)."""
    return error_info.reason_of(exc) == error_info.PROMPT_NOT_FOUND


def _call_gone(exc: grpc.aio.AioRpcError) -> bool:
    """The gateway no longer has the call: the caller hung up (NOT_FOUND about the call; the
    ACD's NOT_FOUND for an unknown queue is not this)."""
    return error_info.reason_of(exc) == error_info.CALL_NOT_FOUND
