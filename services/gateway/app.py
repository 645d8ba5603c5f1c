"""Wires the gateway: libraries (SIP transports and transactions, registrar, media clock), the
channels (SIP, analog), the core switch, the CallControl servicer, events out, the recording
spool and its uploader to the recorder.
"""

from __future__ import annotations

import logging
from functools import partial

from aiohttp import web

from common.events import KEEP
from common.health import Readiness
from common.service import Stop, Wiring
from gateway import priority
from gateway.acd_link import GrpcAcdLink
from gateway.analog.config import open_card
from gateway.analog.port import LineCard
from gateway.analog.sim import SimCard
from gateway.analog.sim_http import make_control_app
from gateway.capacity import MediaClockCollector, MediaPortCollector
from gateway.channels.analog import AnalogChannel, LineStateCollector
from gateway.channels.sip import CarrierTrunk, SipChannel, TrunkPolicy
from gateway.channels.sip.admission import Admission
from gateway.core.contracts import Originator
from gateway.core.prompts import PromptLibrary
from gateway.core.switch import Switch
from gateway.directory import load_directory
from gateway.media.clock import FrameClock
from gateway.media.endpoint import PortAllocator
from gateway.notifier import CallNotifier
from gateway.recording import SpoolCollector, SpoolingRecorder
from gateway.servicer import CallControlServicer
from gateway.settings import GatewaySettings
from gateway.sip.registrar import Registrar
from gateway.sip.transaction import Timers
from gateway.sip.transaction_asyncio import TransactionLayer
from gateway.sip.transport import TcpTransport, UdpTransport
from gateway.spool import Spool
from gateway.state import GatewayState, PersistentBindings
from gateway.uploader import GrpcRecorderLink, Uploader
from hotline.v1 import acd_pb2_grpc, gateway_pb2_grpc

log = logging.getLogger(__name__)


async def main(settings: GatewaySettings, readiness: Readiness) -> Stop:
    # before any file is opened: what the gateway writes belongs to the user it runs as
    if settings.realtime_priority:
        priority.raise_loop_priority(settings.realtime_priority)
        log.info("event loop at real-time priority SCHED_RR %d", settings.realtime_priority)
    if settings.user is not None:
        priority.become(*settings.user)
    wiring = Wiring("gateway", settings, readiness)
    state = GatewayState(settings.state_file)
    wiring.on_stop(state.close, "state file")
    # a call's facts the broker lost by restarting empty are published again (CDRs end)
    notifier = CallNotifier(wiring.publisher(keep=KEEP), on_call_ended=state.call_ended)
    for held in state.held_calls():  # what a previous run left: its end is announced now
        notifier.lost_in_restart(held.call_id, held.offered_at)
    notifier.start()
    wiring.on_stop(notifier.stop, "call notifier")
    spool = Spool(settings.recording_spool)
    wiring.on_stop(spool.close, "recording spool")  # after the uploader: seals of the last calls
    uploader = Uploader(
        spool, partial(GrpcRecorderLink.connect, settings.grpc_target("recorder"), wiring.tls)
    )
    await uploader.start()  # queues what a previous run left, before this run records anything
    wiring.on_stop(uploader.stop, "recording uploader")
    wiring.collector(SpoolCollector(spool, uploader))
    recorder = SpoolingRecorder(spool, uploader)
    clock = FrameClock()
    clock.start()
    wiring.on_stop(clock.stop, "media clock")
    wiring.collector(MediaClockCollector(clock, settings.site, priority.loop_priority()))

    realm = settings.sip_realm
    bindings = PersistentBindings(state.save_binding, state.delete_binding)
    registrar = Registrar(load_directory(realm, settings.extensions_file), realm, bindings=bindings)
    allocator = PortAllocator(settings.rtp_low, settings.rtp_high)
    admission = Admission(settings.admission)
    wiring.collector(
        MediaPortCollector(
            allocator,
            settings.site,
            admission.headroom,
            max_calls=admission.limits.gateway_max_calls,
            max_cps=admission.limits.gateway_cps,
        )
    )
    sip = SipChannel(
        TransactionLayer(
            Timers(),
            lambda req, tx: sip.on_request(req, tx),
            lambda resp, addr: sip.on_stray_response(resp, addr),
        ),
        registrar,
        (settings.sip_host, settings.sip_port),
        media_host=settings.sip_host,
        allocator=allocator,
        trunk=TrunkPolicy.of(
            "sip-trunk", settings.trunk_dids, settings.trunk_allow, settings.trunk_trust_pai
        ),
        site=settings.site,
        admission=admission,
    )
    card = open_card(settings.analog_card, clock, settings.analog_law)
    analog = None if card is None else AnalogChannel(card, trunk="analog", did=settings.analog_did)
    trunks: dict[str, Originator] = {} if analog is None else {"analog": analog}
    carrier = None
    if settings.carrier is not None:
        carrier = CarrierTrunk(sip, settings.carrier, site=settings.site, events=notifier)
        trunks[carrier.name] = carrier
    switch = Switch(
        site=settings.site,
        events=notifier,
        clock=clock,
        prompts=PromptLibrary(settings.prompt_dir),
        endpoints=sip,
        trunks=trunks,
        recorder=recorder,
        journal=state,
        acd=GrpcAcdLink(acd_pb2_grpc.AcdStub(wiring.channel("acd"))),
        number_trunk=carrier.name if carrier is not None else "analog",
    )

    udp = await UdpTransport.listen(
        settings.bind_host,
        settings.sip_port,
        sip.layer.receive,
        lambda data, addr, exc: sip.on_malformed(data, addr, exc, udp),
    )
    wiring.on_stop(udp.close, "sip udp")
    restored = bindings.restore(state.load_bindings({udp.name: udp}))
    if restored:
        log.info("%d phone registrations restored from %s", restored, settings.state_file)
    tcp = await TcpTransport.listen(
        settings.bind_host,
        settings.sip_port,
        sip.layer.receive,
        lambda data, addr, exc: log.info("bad SIP over TCP from %s: %s", addr, exc),
        settings.tcp_limits,
    )
    wiring.on_stop(tcp.close, "sip tcp")
    sip.start(switch, udp)
    wiring.on_stop(sip.stop, "sip channel")
    if carrier is not None:
        await carrier.start()
        wiring.on_stop(carrier.stop, f"carrier trunk {carrier.name}")
    readiness.set("sip", True, f"udp+tcp {settings.bind_host}:{settings.sip_port}")
    log.info(
        "SIP listening on %s:%d (UDP, TCP), realm %s", settings.bind_host, settings.sip_port, realm
    )
    if analog is not None and card is not None:
        await analog.start(switch)
        wiring.on_stop(analog.stop, "analog lines")
        wiring.on_drain(analog.busy_out, "analog lines")
        wiring.collector(LineStateCollector(card, settings.site))
        sim_control = await _start_sim_control(
            card, settings.sim_control_host, settings.sim_control_port
        )
        if sim_control is not None:
            wiring.on_stop(sim_control.cleanup, "sim card control API")
    wiring.on_stop(switch.stop, "switch")  # runs first after the gRPC server stops
    wiring.on_drain(switch.drain, "live calls")
    wiring.servicer(
        gateway_pb2_grpc.add_CallControlServicer_to_server,
        CallControlServicer(
            switch,
            settings.dial_plan,
            settings.dialout_ring_timeout_ms,
            settings.flow_owner_timeout_s,
        ),
    )
    return await wiring.start()


async def _start_sim_control(card: LineCard, host: str, port: int) -> web.AppRunner | None:
    """A simulated card gets its control API (HOTLINE_SIM_CONTROL_PORT)."""
    if not isinstance(card, SimCard):
        return None

    control = web.AppRunner(make_control_app(card), access_log=None)
    await control.setup()
    await web.TCPSite(control, host, port).start()
    log.info(
        "simulated line card: %d ports, control API on http://%s:%d/ports",
        len(card.ports),
        host,
        port,
    )
    return control
