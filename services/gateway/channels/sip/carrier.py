"""An outside SIP trunk at a carrier: registration, keepalive, limits and outbound calls.

:class:`CarrierTrunk` is what a carrier needs from the gateway besides answering its
INVITEs (those come through the channel's normal admission, recognised by their source):

* it registers at the carrier with digest authentication when asked to (the sans-I/O
  :class:`~gateway.sip.register_client.RegisterClient`, refreshed before expiry, backed off on
  failure);
* it sends OPTIONS every ``keepalive_s`` and marks the trunk up or down from the answers
  (:class:`~gateway.sip.keepalive.OptionsPinger`): the gauge ``hotline_sip_trunk_up`` and a
  ``TrunkStateChanged`` event through :class:`~gateway.core.contracts.TrunkEvents`;
* it places calls for ``CallControl.Originate`` (the core's :class:`Originator` contract):
  the number formatted by the trunk's rules, the INVITE answered for a 401/407 challenge,
  P-Asserted-Identity with our caller ID, session timers and 100rel offered, the new call
  offered to the core as outbound;
* it enforces max concurrent calls (both directions) and calls per second.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from gateway.channels.sip.media import SipMedia
from gateway.channels.sip.negotiation import MediaNegotiation
from gateway.channels.sip.numbering import NumberRules
from gateway.channels.sip.outbound import build_invite, dial, fail
from gateway.channels.sip.useragent import UserAgent
from gateway.core.contracts import Attempt, Offer, Outcome, TrunkEvents
from gateway.media.endpoint import NoFreePort
from gateway.sip.builders import make_response, new_tag
from gateway.sip.digest_client import Credentials, DigestClient
from gateway.sip.identity import diversion_header, pai_header
from gateway.sip.keepalive import OptionsPinger
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.ratelimit import TokenBucket
from gateway.sip.register_client import RegisterClient
from gateway.sip.session_timer import MIN_SE, uac_headers
from gateway.sip.syntax import SipParseError

if TYPE_CHECKING:
    from gateway.channels.sip.leg import SipLeg

__all__ = ["CarrierConfig", "CarrierTrunk"]

log = logging.getLogger(__name__)

TRUNK_UP = Gauge("hotline_sip_trunk_up", "SIP trunk reachable (1) or down (0)", ["trunk", "site"])
TRUNK_REGISTERED = Gauge(
    "hotline_sip_trunk_registered", "Registered at the carrier (1) or not (0)", ["trunk", "site"]
)
TRUNK_CALLS = Gauge("hotline_sip_trunk_calls", "Live calls on a SIP trunk", ["trunk", "site"])


@dataclass(frozen=True)
class CarrierConfig:
    """One carrier trunk, as the gateway's settings describe it."""

    host: str
    name: str = "sip-trunk"
    port: int = 5060
    transport: str = "udp"
    domain: str = ""  # the carrier's domain in URIs; the host when empty
    username: str = ""
    password: str = field(default="", repr=False)
    realm: str | None = None
    register: bool = False
    register_expires: int = 3600
    keepalive_s: float = 30.0  # 0: no OPTIONS keepalive
    number_in: NumberRules = NumberRules()
    number_out: NumberRules = NumberRules()
    caller_id: str = ""  # our number towards the carrier (From, P-Asserted-Identity)
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    max_calls: int = 30
    calls_per_second: float = 5.0
    trust_pai: bool = True  # take ANI from P-Asserted-Identity of this carrier
    session_expires: int = 1800  # 0: no session timer offered
    retry_min_s: float = 5.0
    retry_max_s: float = 300.0

    @property
    def uri_host(self) -> str:
        return self.domain or self.host


class CarrierTrunk:
    """A carrier trunk on a SIP channel; the core's Originator for ``config.name``."""

    def __init__(
        self,
        channel: UserAgent,
        config: CarrierConfig,
        *,
        site: str,
        events: TrunkEvents | None = None,
    ) -> None:
        self.channel, self.config, self.site, self.events = channel, config, site, events
        self.name = config.name
        self.codecs = config.codecs
        self.trust_pai = config.trust_pai
        credentials = (
            Credentials(config.username, config.password, config.realm) if config.username else None
        )
        self.digest = DigestClient(credentials) if credentials is not None else None
        self._credentials = credentials
        self._ips: set[str] = set()
        self._bucket = TokenBucket(config.calls_per_second, max(1, int(config.calls_per_second)))
        self.active: set[str] = set()  # leg ids of live calls on this trunk
        self.keepalive_up: bool | None = None
        self.registration: RegisterClient | None = None
        self.up: bool | None = None
        self.reason = "starting"
        self._tasks: list[asyncio.Task[None]] = []
        TRUNK_UP.labels(self.name, site).set(0)
        TRUNK_CALLS.labels(self.name, site).set(0)

    # ---- lifetime ------------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve the carrier, then keepalive and registration run in the background."""
        self._ips = await _addresses(self.config.host)
        self.channel.add_carrier(self)
        if self.config.keepalive_s > 0:
            self._tasks.append(asyncio.create_task(self._keepalive(), name=f"{self.name}-ping"))
        if self.config.register:
            self._tasks.append(asyncio.create_task(self._register(), name=f"{self.name}-reg"))
        if self.config.keepalive_s <= 0 and not self.config.register:
            self._set_state()
        log.info(
            "carrier trunk %s: %s:%d/%s (%s), register=%s, keepalive=%ss",
            self.name,
            self.config.host,
            self.config.port,
            self.config.transport,
            ",".join(sorted(self._ips)),
            self.config.register,
            self.config.keepalive_s,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        client = self.registration
        if client is not None and client.state.registered:
            try:
                await asyncio.wait_for(self._transact(client.unregister()), 2.0)
            except (asyncio.TimeoutError, OSError, ConnectionError):
                log.info("trunk %s: could not unregister on the way out", self.name)

    # ---- inbound helpers -------------------------------------------------------------------
    def is_source(self, ip: str) -> bool:
        return ip in self._ips

    def number_in(self, number: str) -> str:
        return self.config.number_in.apply(number)

    def inbound_dnis(self, req: SipRequest) -> str:
        """The dialled number of a carrier INVITE: the Request-URI user, or the To user when
        the carrier addresses our registration (the R-URI is then our Contact/username)."""
        user = req.request_uri.user or ""
        if user in ("", "hotline", self.config.username):
            try:
                user = req.to.uri.user or user
            except SipParseError:
                pass
        return self.number_in(user)

    def admit_inbound(self) -> str:
        """ "" when another call fits on the trunk, else why not (503 with the reason)."""
        if len(self.active) >= self.config.max_calls:
            return "Trunk Call Limit Reached"
        return ""

    def call_started(self, leg: SipLeg) -> None:
        self.active.add(leg.leg_id)
        TRUNK_CALLS.labels(self.name, self.site).set(len(self.active))

    def call_ended(self, leg: SipLeg) -> None:
        if leg.leg_id in self.active:
            self.active.discard(leg.leg_id)
            TRUNK_CALLS.labels(self.name, self.site).set(len(self.active))

    # ---- Originator ------------------------------------------------------------------------
    async def originate(
        self,
        number: str,
        policy: str,
        timeout_s: float,
        diverted_from: str = "",
        *,
        standalone: bool = True,
    ) -> Attempt:
        """Call ``number`` through the carrier; answered calls are offered to the core. With
        ``diverted_from`` the INVITE carries Diversion (RFC 5806) for that number."""
        channel, config = self.channel, self.config
        sink = channel.sink
        if sink is None:
            return Attempt(Outcome.NO_LINE, None, f"trunk {self.name} is not started")
        if self.up is False:
            return Attempt(Outcome.NO_LINE, None, f"trunk {self.name} is down: {self.reason}")
        if len(self.active) >= config.max_calls:
            return Attempt(
                Outcome.NO_LINE, None, f"trunk {self.name} has {config.max_calls} calls (its max)"
            )
        if not self._bucket.allow(self.name):
            return Attempt(
                Outcome.NO_LINE,
                None,
                f"trunk {self.name} is at {config.calls_per_second:g} calls per second",
            )
        dialled = config.number_out.apply(number)
        try:
            media = await SipMedia.open(channel.media_host, channel.allocator)
        except NoFreePort:
            return Attempt(Outcome.NO_LINE, None, "no media ports")
        try:
            transport, addr = await channel.transport_to(config.host, config.port, config.transport)
        except (OSError, ConnectionError) as exc:
            media.close()
            return Attempt(Outcome.NO_LINE, None, f"cannot reach {config.host}: {exc}")
        negotiation = MediaNegotiation(media, channel.media_host, config.codecs)
        caller = config.caller_id or config.username or "hotline"
        extra: list[tuple[str, str]] = []
        if config.caller_id:
            extra.append(("P-Asserted-Identity", pai_header(config.caller_id, config.uri_host)))
        if diverted_from:
            extra.append(
                (
                    "Diversion",
                    diversion_header(config.number_out.apply(diverted_from), config.uri_host),
                )
            )
        if config.session_expires:
            extra += uac_headers(config.session_expires, MIN_SE)
        invite = build_invite(
            channel,
            f"sip:{dialled}@{config.uri_host}",
            from_party=f"<sip:{caller}@{config.uri_host}>;tag={new_tag()}",
            to_party=f"<sip:{dialled}@{config.uri_host}>",
            transport=transport,
            body=negotiation.offer(),
            extra=extra,
        )
        leg = await channel.open_leg(
            invite=invite,
            transport=transport,
            peer=addr,
            media=media,
            negotiation=negotiation,
            trunk=self.name,
        )
        self.call_started(leg)
        dialed = await dial(channel, leg, timeout_s, asyncio.Event(), self.digest)
        if not dialed.answered:
            fail(channel, leg)
            self.call_ended(leg)  # the attempt no longer counts, though its dialog lingers
            final = dialed.final
            if final is None:
                return Attempt(Outcome.NO_ANSWER, None, f"no answer within {timeout_s:.0f}s")
            if final.status in (486, 600):
                return Attempt(Outcome.BUSY, None, dialed.detail)
            if final.status in (401, 403, 407) or final.status >= 500:
                return Attempt(Outcome.NO_LINE, None, f"carrier refused: {dialed.detail}")
            return Attempt(Outcome.NO_ANSWER, None, dialed.detail)
        if not standalone:  # a party for a call the core has: not a new call
            log.info("trunk %s: %s answered for a call in progress", self.name, number)
            return Attempt(Outcome.ANSWERED, leg, "")
        call_id = sink.offer(
            leg,
            Offer(ani=caller, dnis=number, trunk=self.name, channel="sip", outbound=True),
        )
        log.info("trunk %s: call %s to %s (%s) is up", self.name, call_id, number, dialled)
        return Attempt(Outcome.ANSWERED, leg, "")

    # ---- state -----------------------------------------------------------------------------
    def _set_state(self) -> None:
        reasons = []
        up = True
        if self.config.keepalive_s > 0:
            if self.keepalive_up is False:
                up = False
            reasons.append(f"OPTIONS {self._pinger_reason}")
        if self.config.register and self.registration is not None:
            state = self.registration.state
            if not state.registered:
                up = False
            reasons.append(f"REGISTER {state.reason}")
        reason = "; ".join(reasons) or "no keepalive configured"
        TRUNK_UP.labels(self.name, self.site).set(1 if up else 0)
        changed = up is not self.up
        self.up, self.reason = up, reason
        if changed:
            log.log(
                logging.INFO if up else logging.WARNING,
                "trunk %s is %s (%s)",
                self.name,
                "up" if up else "down",
                reason,
            )
            if self.events is not None:
                self.events.trunk_state(self.name, up, reason)

    _pinger_reason = "not probed yet"

    async def _transact(self, req: SipRequest) -> tuple[SipResponse, bool]:
        """Send one request to the carrier: its final response and whether we made it up
        (timeout, transport error)."""
        config = self.config
        try:
            transport, addr = await self.channel.transport_to(
                config.host, config.port, config.transport
            )
        except (OSError, ConnectionError) as exc:
            return make_response(req, 503, f"Cannot Connect ({exc})"[:80]), True
        tx = await self.channel.layer.request(req, transport, addr)
        final = await tx.final()
        return final, tx.timed_out or tx.transport_error is not None

    async def _keepalive(self) -> None:
        config, channel = self.config, self.channel
        pinger = OptionsPinger(
            target_uri=f"sip:{config.uri_host}:{config.port}",
            from_uri=f"sip:{config.username or 'hotline'}@{channel.host}",
            via_host=channel.host,
            via_port=channel.port,
            transport_name=config.transport,
            interval=config.keepalive_s,
        )
        await _drive(pinger, self._ping_once)

    async def _ping_once(self, pinger: OptionsPinger, req: SipRequest) -> None:
        final, synthesized = await self._transact(req)
        loop = asyncio.get_running_loop()
        changed = pinger.receive_response(final, loop.time(), synthesized=synthesized)
        self.keepalive_up = pinger.up
        self._pinger_reason = pinger.reason
        if changed is not None or self.up is None:
            self._set_state()

    async def _register(self) -> None:
        config, channel = self.config, self.channel
        client = self.registration = RegisterClient(
            registrar_uri=f"sip:{config.uri_host}:{config.port}",
            aor=f"sip:{config.username or 'hotline'}@{config.uri_host}",
            contact=channel.contact_for(config.transport),
            via_host=channel.host,
            via_port=channel.port,
            transport_name=config.transport,
            credentials=self._credentials,
            expires=config.register_expires,
            retry_min=config.retry_min_s,
            retry_max=config.retry_max_s,
        )
        await _drive(client, self._register_once)

    async def _register_once(self, client: RegisterClient, req: SipRequest) -> None:
        loop = asyncio.get_running_loop()
        was = client.state.registered
        next_req: SipRequest | None = req
        while next_req is not None:
            final, _ = await self._transact(next_req)
            next_req = client.receive_response(final, loop.time())
        TRUNK_REGISTERED.labels(self.name, self.site).set(1 if client.state.registered else 0)
        if client.state.registered != was or self.up is None or not client.state.registered:
            if not client.state.registered:
                log.warning("trunk %s: registration failed: %s", self.name, client.state.reason)
            self._set_state()


_Client = RegisterClient | OptionsPinger


async def _drive(machine: _Client, send: Callable[[Any, SipRequest], Awaitable[None]]) -> None:
    """Run a sans-I/O client on the event loop: sleep to its deadline, send what is due."""
    loop = asyncio.get_running_loop()
    machine.start(loop.time())
    while True:
        at = machine.get_timer()
        if at is None:  # cannot happen between sends; guard against a busy loop
            await asyncio.sleep(1.0)
            continue
        await asyncio.sleep(max(0.0, at - loop.time()))
        req = machine.handle_timer(loop.time())
        if req is not None:
            await send(machine, req)


async def _addresses(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    return {str(info[4][0]) for info in infos}
