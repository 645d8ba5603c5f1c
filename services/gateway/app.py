"""Wires the gateway: libraries (SIP transports and transactions, registrar, media clock), the
channels (SIP, analog), the core switch, the CallControl servicer, events out, recorder client.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from aiohttp import web
from hotline.v1 import gateway_pb2_grpc, recorder_pb2_grpc
from prometheus_client import REGISTRY

from common import rpc
from common.events import EventPublisher
from common.health import Readiness
from common.service import Stop
from common.settings import Settings
from gateway.analog.config import card_from_env
from gateway.analog.port import LineCard
from gateway.channels.analog import AnalogChannel, LineStateCollector
from gateway.channels.sip import SipChannel, TrunkPolicy
from gateway.core.contracts import Originator
from gateway.core.prompts import PromptLibrary
from gateway.core.switch import Switch
from gateway.directory import load_directory
from gateway.media.clock import FrameClock
from gateway.media.endpoint import PortAllocator
from gateway.notifier import CallNotifier
from gateway.recording import GrpcRecorder
from gateway.servicer import CallControlServicer
from gateway.sip.registrar import Registrar
from gateway.sip.transaction import Timers, TransactionLayer
from gateway.sip.transport import TcpTransport, UdpTransport

log = logging.getLogger(__name__)


def _list(name: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


async def main(settings: Settings, readiness: Readiness) -> Stop:
    realm = os.environ.get("HOTLINE_SIP_REALM", "hotline")
    publisher = EventPublisher(settings, "gateway", readiness)
    publisher.start()
    notifier = CallNotifier(publisher)
    notifier.start()
    clock = FrameClock()
    clock.start()
    recorder_channel = rpc.channel(settings.grpc_target("recorder"))
    prompt_dir = Path(os.environ.get("HOTLINE_PROMPT_DIR", str(settings.var_dir / "prompts")))

    registrar = Registrar(load_directory(realm), realm)
    sip = SipChannel(
        TransactionLayer(Timers(), lambda req, tx: sip.on_request(req, tx),
                         lambda resp, addr: sip.on_stray_response(resp, addr)),
        registrar, (settings.sip_host, settings.sip_port), media_host=settings.sip_host,
        allocator=PortAllocator(settings.rtp_low, settings.rtp_high),
        trunk=TrunkPolicy.of("sip-trunk", _list("HOTLINE_TRUNK_DIDS", "10000,10001"),
                             _list("HOTLINE_TRUNK_ALLOW", "127.0.0.0/8,::1/128")),
        site=settings.site)
    card = card_from_env(clock)
    analog = None if card is None else AnalogChannel(
        card, trunk="analog", did=os.environ.get("HOTLINE_ANALOG_DID", "10000"))
    trunks: dict[str, Originator] = {} if analog is None else {"analog": analog}
    switch = Switch(site=settings.site, events=notifier, clock=clock,
                    prompts=PromptLibrary(prompt_dir), endpoints=sip, trunks=trunks,
                    recorder=GrpcRecorder(recorder_pb2_grpc.RecorderStub(recorder_channel)))

    sip.start(switch)
    udp = await UdpTransport.listen(settings.bind_host, settings.sip_port, sip.layer.receive,
                                    lambda data, addr, exc: sip.on_malformed(data, addr, exc, udp))
    tcp = await TcpTransport.listen(settings.bind_host, settings.sip_port, sip.layer.receive,
                                    lambda data, addr, exc: log.info("bad SIP over TCP from %s: %s",
                                                                     addr, exc))
    readiness.set("sip", True, f"udp+tcp {settings.bind_host}:{settings.sip_port}")
    log.info("SIP listening on %s:%d (UDP, TCP), realm %s", settings.bind_host,
             settings.sip_port, realm)
    sim_control, lines_metrics = None, None
    if analog is not None and card is not None:
        await analog.start(switch)
        lines_metrics = LineStateCollector(card, settings.site)
        REGISTRY.register(lines_metrics)
        sim_control = await _start_sim_control(card, settings.bind_host)

    server = rpc.server(settings.bind_host, settings.grpc_ports["gateway"])
    gateway_pb2_grpc.add_CallControlServicer_to_server(CallControlServicer(switch), server)
    await server.start()

    async def stop() -> None:
        await server.stop(grace=2)
        await switch.stop()
        sip.stop()
        if analog is not None:
            await analog.stop()
        if lines_metrics is not None:
            REGISTRY.unregister(lines_metrics)
        if sim_control is not None:
            await sim_control.cleanup()
        udp.close()
        await tcp.close()
        clock.stop()
        await notifier.stop()
        await publisher.stop()
        await recorder_channel.close()

    return stop


async def _start_sim_control(card: LineCard, host: str) -> web.AppRunner | None:
    """A simulated card gets its control API (HOTLINE_SIM_CONTROL_PORT, default 9110)."""
    if not hasattr(card, "exchange"):
        return None
    from gateway.analog.sim_http import make_control_app
    port = int(os.environ.get("HOTLINE_SIM_CONTROL_PORT", "9110"))
    control = web.AppRunner(make_control_app(card), access_log=None)
    await control.setup()
    await web.TCPSite(control, host, port).start()
    log.info("simulated line card: %d ports, control API on http://%s:%d/ports",
             len(card.ports), host, port)
    return control
