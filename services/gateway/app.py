"""Wires the gateway: SIP transports and transactions, registrar, switch, media clock,
CallControl gRPC, events out, recorder client."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from hotline.v1 import gateway_pb2_grpc, recorder_pb2_grpc

from common import rpc
from common.events import EventPublisher
from common.health import Readiness
from common.service import Stop
from common.settings import Settings
from aiohttp import web
from prometheus_client import REGISTRY

from gateway.analog.config import card_from_env
from gateway.analog.lines import AnalogLines, LineStateCollector
from gateway.control import CallControlService
from gateway.directory import load_directory
from gateway.media.clock import FrameClock
from gateway.media.endpoint import PortAllocator
from gateway.sip.registrar import Registrar
from gateway.sip.transaction import Timers
from gateway.sip.transaction_asyncio import TransactionLayer
from gateway.sip.transport import TcpTransport, UdpTransport
from gateway.sip.useragent import UserAgent
from gateway.switch import Prompts, Switch

log = logging.getLogger(__name__)


def _list(name: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


async def main(settings: Settings, readiness: Readiness) -> Stop:
    realm = os.environ.get("HOTLINE_SIP_REALM", "hotline")
    publisher = EventPublisher(settings, "gateway", readiness)
    publisher.start()
    registrar = Registrar(load_directory(realm), realm)
    clock = FrameClock()
    clock.start()
    recorder_channel = rpc.channel(settings.grpc_target("recorder"))
    prompt_dir = Path(os.environ.get("HOTLINE_PROMPT_DIR", str(settings.var_dir / "prompts")))
    switch = Switch(site=settings.site, publisher=publisher, registrar=registrar,
                    allocator=PortAllocator(settings.rtp_low, settings.rtp_high), clock=clock,
                    prompts=Prompts(prompt_dir), media_host=settings.sip_host,
                    dids=set(_list("HOTLINE_TRUNK_DIDS", "10000,10001")),
                    trunk_allow=_list("HOTLINE_TRUNK_ALLOW", "127.0.0.0/8,::1/128"),
                    recorder_stub=recorder_pb2_grpc.RecorderStub(recorder_channel))
    ua: UserAgent | None = None

    def on_request(req, tx):  # noqa: ANN001
        return ua.on_request(req, tx)

    def on_stray(resp, addr):  # noqa: ANN001
        ua.on_stray_response(resp, addr)

    layer = TransactionLayer(Timers(), on_request, on_stray)
    ua = UserAgent(layer, switch, registrar, (settings.sip_host, settings.sip_port))
    switch.ua = ua
    udp = await UdpTransport.listen(settings.bind_host, settings.sip_port, layer.receive,
                                    lambda data, addr, exc: ua.on_malformed(data, addr, exc, udp))
    tcp = await TcpTransport.listen(settings.bind_host, settings.sip_port, layer.receive,
                                 lambda data, addr, exc: log.info("bad SIP over TCP from %s: %s",
                                                                  addr, exc))
    analog, sim_control, lines_metrics = await _start_analog(settings, switch, clock)
    readiness.set("sip", True, f"udp+tcp {settings.bind_host}:{settings.sip_port}")
    log.info("SIP listening on %s:%d (UDP, TCP), realm %s", settings.bind_host,
             settings.sip_port, realm)
    server = rpc.server(settings.bind_host, settings.grpc_ports["gateway"])
    gateway_pb2_grpc.add_CallControlServicer_to_server(CallControlService(switch), server)
    await server.start()

    async def stop() -> None:
        await server.stop(grace=2)
        await switch.stop()
        if analog is not None:
            await analog.stop()
            REGISTRY.unregister(lines_metrics)
        if sim_control is not None:
            await sim_control.cleanup()
        udp.close()
        await tcp.close()
        clock.stop()
        await publisher.stop()
        await recorder_channel.close()

    return stop


async def _start_analog(settings: Settings, switch: Switch, clock: FrameClock):  # noqa: ANN202
    """The line card of HOTLINE_ANALOG_CARD as an analog trunk to HOTLINE_ANALOG_DID; a sim
    card also gets its control API (HOTLINE_SIM_CONTROL_PORT, default 9110)."""
    card = card_from_env(clock)
    if card is None:
        return None, None, None
    lines = AnalogLines(switch, card, trunk="analog", did=os.environ.get("HOTLINE_ANALOG_DID",
                                                                          "10000"))
    switch.analog = lines
    await lines.start()
    collector = LineStateCollector(card, settings.site)
    REGISTRY.register(collector)
    control = None
    if hasattr(card, "exchange"):
        from gateway.analog.sim_http import make_control_app
        port = int(os.environ.get("HOTLINE_SIM_CONTROL_PORT", "9110"))
        control = web.AppRunner(make_control_app(card), access_log=None)
        await control.setup()
        await web.TCPSite(control, settings.bind_host, port).start()
        log.info("simulated line card: %d ports, control API on http://%s:%d/ports",
                 len(card.ports), settings.bind_host, port)
    return lines, control, collector
