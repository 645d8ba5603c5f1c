"""Call logic: offering, answering, prompts, digits, ringing endpoints, bridging, ending.

The switch owns every live call. The SIP user agent tells it what the network did; the
gRPC CallControl API tells it what the IVR and ACD want; it announces what happened on
Kafka in order, through one outbox, so CallOffered always precedes CallEnded for a call.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.message import Message
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from prometheus_client import Counter, Gauge

from common.events import EventPublisher
from gateway.analog.channel import AnalogLeg
from gateway.calls import Call, CallGone, CallRegistry, CallState, SipLeg
from gateway.media.bridge import Bridge
from gateway.media.clock import FrameClock
from gateway.media.endpoint import NoFreePort, PortAllocator, RtpEndpoint
from gateway.media.prompts import PromptError, PromptPlayer, frames, load_wav
from gateway.recording import RecordingStream
from gateway.sip import sdp
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.registrar import Registrar
from gateway.sip.syntax import SipParseError

if TYPE_CHECKING:
    from gateway.analog.lines import AnalogLines
    from gateway.sip.useragent import UserAgent

log = logging.getLogger(__name__)

ACTIVE = Gauge("hotline_active_calls", "Live calls by state", ["state", "site"])
CALLS = Counter("hotline_gateway_calls_total", "Calls by how they ended", ["reason", "site"])
REJECTED = Counter("hotline_gateway_rejected_total", "INVITEs refused", ["status", "site"])

ANSWER_TIMEOUT_S = 60.0
LEG_LINGER_S = 5.0       # keep ended legs routable for late retransmissions


class CommandError(Exception):
    """A command that cannot be done in the call's current state (FAILED_PRECONDITION)."""


class PromptNotFound(Exception):
    """No prompt file by that name."""


class Prompts:
    """Prompt frames by name, loaded once from the prompt directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, list] = {}

    def get(self, name: str) -> list:
        if name not in self._cache:
            if not name or "/" in name or name.startswith("."):
                raise PromptNotFound(f"invalid prompt name {name!r}")
            path = self.directory / f"{name}.wav"
            if not path.exists():
                raise PromptNotFound(f"prompt {name!r} not found in {self.directory}")
            try:
                self._cache[name] = frames(load_wav(path))
            except PromptError as exc:
                raise PromptNotFound(f"prompt {name!r} is unusable: {exc}") from exc
        return self._cache[name]


class Switch:
    def __init__(self, *, site: str, publisher: EventPublisher, registrar: Registrar,
                 allocator: PortAllocator, clock: FrameClock, prompts: Prompts,
                 media_host: str, dids: set[str], trunk_allow: list[str],
                 recorder_stub: object | None, trunk_name: str = "sip-trunk") -> None:
        self.site, self.publisher, self.registrar = site, publisher, registrar
        self.allocator, self.clock, self.prompts = allocator, clock, prompts
        self.media_host, self.dids, self.trunk_name = media_host, dids, trunk_name
        self.trunk_allow = [ipaddress.ip_network(n, strict=False) for n in trunk_allow]
        self.recorder_stub = recorder_stub
        self.ua: UserAgent | None = None
        self.analog: AnalogLines | None = None
        self.registry = CallRegistry()
        self._playing: set[Call] = set()
        self._outbox: asyncio.Queue[tuple[Message, str]] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._clock_handle = clock.subscribe(self._tick)
        self._outbox_task = asyncio.create_task(self._drain_outbox(), name="gateway-outbox")

    # ---- plumbing ----------------------------------------------------------------------
    def spawn(self, coro, name: str) -> asyncio.Task:  # noqa: ANN001
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def announce(self, payload: Message, key: str) -> None:
        self._outbox.put_nowait((payload, key))

    async def _drain_outbox(self) -> None:
        """Publish call events in order; an event is retried until the broker has it (with the
        same event id, so a retry of one that did land is dropped by consumers), never lost."""
        while True:
            payload, key = await self._outbox.get()
            event_id, delay = str(uuid.uuid4()), 0.5
            while True:
                try:
                    await self.publisher.publish(payload, key, event_id=event_id)
                    break
                except Exception:
                    log.exception("could not publish %s for %s; retrying in %.1fs",
                                  payload.DESCRIPTOR.name, key, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

    def _update_gauges(self) -> None:
        counts = dict.fromkeys((s.value for s in CallState if s != CallState.ENDED), 0)
        for call in self.registry.calls.values():
            if call.state != CallState.ENDED:
                counts[call.state.value] += 1
        for state, n in counts.items():
            ACTIVE.labels(state, self.site).set(n)

    async def stop(self) -> None:
        for call in list(self.registry.calls.values()):
            self.end(call, ev.END_REASON_SYSTEM, "gateway stopping")
        await asyncio.sleep(0.2)
        self.clock.unsubscribe(self._clock_handle)
        self._outbox_task.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _open_endpoint(self) -> RtpEndpoint:
        return await RtpEndpoint.open(self.media_host, self.allocator)

    # ---- from the network --------------------------------------------------------------
    def trunk_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trunk_allow)

    async def incoming(self, req: SipRequest, leg_factory: Callable[[RtpEndpoint, bytes], SipLeg],
                       source: tuple[str, int]) -> SipResponse | None:
        """A new INVITE from a trunk. Returns a final error response, or None if offered."""
        dnis = req.request_uri.user or ""
        if not self.trunk_allowed(source[0]):
            REJECTED.labels("403", self.site).inc()
            return self.ua.response(req, 403, "Source Not Allowed On Trunk")
        if dnis not in self.dids:
            REJECTED.labels("404", self.site).inc()
            log.info("INVITE to unknown number %r from %s:%d refused", dnis, *source)
            return self.ua.response(req, 404, "No Such Number")
        if not req.body:
            REJECTED.labels("488", self.site).inc()
            return self.ua.response(req, 488, "SDP Offer Required")
        try:
            offer = sdp.parse_sdp(req.body)
        except sdp.SdpError as exc:
            REJECTED.labels("400", self.site).inc()
            return self.ua.response(req, 400, f"Bad SDP: {exc}"[:100])
        try:
            endpoint = await self._open_endpoint()
        except NoFreePort:
            REJECTED.labels("503", self.site).inc()
            return self.ua.response(req, 503, "No Media Ports")
        try:
            negotiated, answer = sdp.answer(offer, self.media_host, endpoint.local_port)
        except sdp.SdpError as exc:
            endpoint.close()
            REJECTED.labels("488", self.site).inc()
            return self.ua.response(req, 488, f"{exc}"[:100])
        endpoint.configure((negotiated.remote_addr, negotiated.remote_port), negotiated.codec,
                           negotiated.payload_type, negotiated.dtmf_payload_type)
        leg = leg_factory(endpoint, answer.to_bytes())
        try:
            from_ = req.from_
            ani = from_.uri.user or from_.uri.host
            name = from_.display or ""
        except SipParseError:
            ani, name = "", ""
        call = Call(call_id=str(uuid.uuid4()), ani=ani, dnis=dnis, trunk=self.trunk_name,
                    channel="sip", caller=leg, caller_name=name)
        self.offer(call)
        log.info("call %s offered: %s -> %s (%s)", call.call_id, ani, dnis, negotiated.codec)
        return None

    def _sig(self, leg: SipLeg | AnalogLeg):  # noqa: ANN202 - UserAgent | AnalogLines
        """Who signals on this leg: the SIP user agent, or the analog line supervisor."""
        return self.analog if isinstance(leg, AnalogLeg) else self.ua

    def offer(self, call: Call, outbound: bool = False) -> None:
        """A new call on any channel: track it and announce CallOffered. An inbound call rings
        and waits for Answer; an outbound one (Originate) is already up."""
        call.caller.endpoint.on_dtmf = lambda digit, c=call: self._digit(c, digit)
        self.registry.add(call)
        self.announce(ev.CallOffered(call_id=call.call_id, ani=call.ani, dnis=call.dnis,
                                     trunk=call.trunk, channel=call.channel,
                                     caller_name=call.caller_name, line=call.line,
                                     direction="outbound" if outbound else "inbound"),
                      call.call_id)
        if outbound:
            call.state, call.answered_at = CallState.ANSWERED, time.monotonic()
            self.announce(ev.CallAnswered(call_id=call.call_id), call.call_id)
        else:
            self._sig(call.caller).ring(call.caller)
            self.spawn(self._answer_timeout(call), f"answer-timeout-{call.call_id}")
        self._update_gauges()

    async def originate(self, trunk: str, number: str, policy: str,
                        timeout_s: float) -> tuple[int, Call | None, str]:
        """Place an outbound call on a trunk (today: the analog lines)."""
        if trunk != "analog":
            raise CommandError(f"trunk {trunk!r} cannot place calls (have: analog)")
        if self.analog is None:
            raise CommandError("no analog line card is configured (HOTLINE_ANALOG_CARD)")
        return await self.analog.originate(number, policy, timeout_s)

    async def _answer_timeout(self, call: Call) -> None:
        await asyncio.sleep(ANSWER_TIMEOUT_S)
        if call.state == CallState.OFFERED:
            log.warning("call %s was never answered by the IVR; releasing", call.call_id)
            self.end(call, ev.END_REASON_TIMEOUT, "not answered in time")

    def leg_released(self, call: Call, leg: SipLeg, detail: str) -> None:
        """The far end of a leg hung up (BYE, CANCEL)."""
        leg.terminated = True
        if leg is call.pending:
            return     # the ringing endpoint declined; connect() sees the final response
        reason = ev.END_REASON_CALLER_HANGUP if leg is call.caller else ev.END_REASON_AGENT_HANGUP
        self.end(call, reason, detail, by=leg)

    def _digit(self, call: Call, digit: str) -> None:
        call.digits.append(digit)
        call.digit_arrived.set()
        if call.barge_in and call.player is not None:
            self._stop_player(call, completed=False)

    # ---- commands ----------------------------------------------------------------------
    def answer(self, call_id: str) -> Call:
        call = self.registry.get(call_id)
        if call.state != CallState.OFFERED:
            return call              # answering twice is harmless
        self._sig(call.caller).answer(call.caller)
        call.state = CallState.ANSWERED
        call.answered_at = time.monotonic()
        self.announce(ev.CallAnswered(call_id=call.call_id), call.call_id)
        self._update_gauges()
        return call

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
            call.caller.endpoint.send_audio(frame)

    async def play(self, call_id: str, prompt: str, barge_in: bool, loop: bool) -> tuple[bool, str]:
        call = self.registry.get(call_id)
        if call.state != CallState.ANSWERED:
            raise CommandError(f"call {call_id} is {call.state.value}; prompts play only to "
                               "answered calls that are not bridged")
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

    async def collect(self, call_id: str, max_digits: int, timeout_ms: int,
                      inter_digit_ms: int, terminators: str) -> tuple[str, str]:
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

    async def connect(self, call_id: str, extension: str, ring_timeout_s: float, agent_id: str,
                      queue: str) -> tuple[int, str, str]:
        """Ring an extension and bridge it to the call; returns (ConnectResult, leg id, detail)."""
        call = self.registry.get(call_id)
        if call.state != CallState.ANSWERED or call.pending is not None:
            raise CommandError(f"call {call_id} is {call.state.value}"
                               f"{' and already ringing an endpoint' if call.pending else ''}")
        binding = self.registrar.lookup(extension)
        if binding is None:
            return gw.CONNECT_RESULT_UNREACHABLE, "", f"extension {extension} is not registered"
        try:
            endpoint = await self._open_endpoint()
        except NoFreePort:
            return gw.CONNECT_RESULT_UNREACHABLE, "", "no media ports"
        offer = sdp.offer(self.media_host, endpoint.local_port)
        leg = await self.ua.invite(binding, call, offer.to_bytes(), endpoint)
        call.pending = leg
        self.registry.bind_leg(call, leg)
        final_task = asyncio.ensure_future(leg.client_tx.final())
        ended_task = asyncio.ensure_future(call.ended.wait())
        try:
            await asyncio.wait({final_task, ended_task}, timeout=ring_timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended_task.cancel()
        if not final_task.done():
            self.spawn(self.ua.cancel(leg), f"cancel-{leg.leg_id}")
            gone = call.ended.is_set()
            try:
                final = await asyncio.wait_for(final_task, 5.0)
            except asyncio.TimeoutError:
                final = None
            if final is None or final.status >= 300:
                self._drop_pending(call, leg)
                if gone:
                    return gw.CONNECT_RESULT_CALLER_GONE, leg.leg_id, "caller hung up while ringing"
                return gw.CONNECT_RESULT_NO_ANSWER, leg.leg_id, \
                    f"no answer within {ring_timeout_s:.0f}s"
        else:
            final = final_task.result()
        if final.status >= 300:
            self._drop_pending(call, leg)
            return _result_for(final.status), leg.leg_id, f"{final.status} {final.reason}"
        # 2xx: the dialog is up; ACK it whatever happens next.
        self.ua.ack(leg, final)
        try:
            negotiated = sdp.negotiate_answer(offer, sdp.parse_sdp(final.body))
        except sdp.SdpError as exc:
            self.spawn(self.ua.bye(leg), f"bye-{leg.leg_id}")
            self._drop_pending(call, leg)
            return gw.CONNECT_RESULT_REJECTED, leg.leg_id, f"unusable SDP answer: {exc}"
        if call.ended.is_set() or call.state != CallState.ANSWERED:
            self.spawn(self.ua.bye(leg), f"bye-{leg.leg_id}")
            self._drop_pending(call, leg)
            return gw.CONNECT_RESULT_CALLER_GONE, leg.leg_id, "caller hung up while connecting"
        endpoint.configure((negotiated.remote_addr, negotiated.remote_port), negotiated.codec,
                           negotiated.payload_type, negotiated.dtmf_payload_type)
        call.pending, call.agent = None, leg
        call.agent_id, call.queue = agent_id, queue
        self._bridge(call, endpoint=extension)
        return gw.CONNECT_RESULT_ANSWERED, leg.leg_id, ""

    def _drop_pending(self, call: Call, leg: SipLeg) -> None:
        if call.pending is leg:
            call.pending = None
        leg.terminated = True
        leg.endpoint.close()

    def _bridge(self, call: Call, endpoint: str) -> None:
        self._stop_player(call, completed=False)
        recording = None
        if self.recorder_stub is not None:
            recording = RecordingStream(self.recorder_stub, call.call_id, call.agent_id, call.queue)
        call.recording = recording
        call.bridge = Bridge(call.caller.endpoint, call.agent.endpoint,
                             tap=recording.tap if recording else None)
        call.bridge.start(self.clock)
        call.state = CallState.BRIDGED
        call.bridged_at = time.monotonic()
        self.announce(ev.CallBridged(call_id=call.call_id, leg_id=call.agent.leg_id,
                                     endpoint=endpoint, agent_id=call.agent_id, queue=call.queue),
                      call.call_id)
        log.info("call %s bridged to %s (%s)", call.call_id, endpoint, call.agent_id)
        self._update_gauges()

    def hangup(self, call_id: str, detail: str) -> Call:
        call = self.registry.get(call_id)
        self.end(call, ev.END_REASON_SYSTEM, detail or "hung up by command")
        return call

    def end(self, call: Call, reason: int, detail: str, by: SipLeg | None = None) -> None:
        """End a call once: release every other leg, stop media, announce CallEnded."""
        if call.state == CallState.ENDED:
            return
        was = call.state
        call.state = CallState.ENDED
        call.ended.set()
        self._stop_player(call, completed=False)
        if call.bridge is not None:
            call.bridge.stop()
        now = time.monotonic()
        for leg in (call.caller, call.agent):
            if leg is None or leg is by or leg.terminated:
                continue
            if leg.uas and not leg.confirmed:
                self._sig(leg).reject(leg, 480, "Temporarily Unavailable")
                leg.terminated = True
            elif leg.confirmed:
                self.spawn(self._sig(leg).bye(leg), f"bye-{leg.leg_id}")
        talk_ms = int((now - call.bridged_at) * 1000) if call.bridged_at else 0
        self.announce(ev.CallEnded(call_id=call.call_id, reason=reason, detail=detail,
                                   duration_ms=int((now - call.offered_at) * 1000),
                                   talk_ms=talk_ms), call.call_id)
        CALLS.labels(ev.EndReason.Name(reason).removeprefix("END_REASON_").lower(), self.site).inc()
        log.info("call %s ended (%s, was %s): %s", call.call_id, ev.EndReason.Name(reason),
                 was.value, detail)
        self.spawn(self._finish(call), f"finish-{call.call_id}")
        self._update_gauges()

    async def _finish(self, call: Call) -> None:
        if call.recording is not None:
            await call.recording.finish()
        await asyncio.sleep(LEG_LINGER_S)
        for leg in (call.caller, call.agent):
            if leg is not None:
                leg.endpoint.close()
        self.registry.remove(call)

    def list_calls(self) -> list[gw.CallInfo]:
        return [gw.CallInfo(call_id=c.call_id, state=c.state.value, ani=c.ani, dnis=c.dnis,
                            channel=c.channel, bridged_to=c.agent_id,
                            started_at_ms=int(c.offered_wall * 1000))
                for c in self.registry.calls.values() if c.state != CallState.ENDED]


def _result_for(status: int) -> int:
    if status in (486, 600):
        return gw.CONNECT_RESULT_BUSY
    if status == 603:
        return gw.CONNECT_RESULT_REJECTED
    if status in (404, 410, 484, 604):
        return gw.CONNECT_RESULT_UNREACHABLE
    if status in (408, 480, 487):
        return gw.CONNECT_RESULT_NO_ANSWER
    return gw.CONNECT_RESULT_REJECTED
