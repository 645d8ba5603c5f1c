"""The gateway's SIP side in the test process: the real SIP channel, transaction layer,
UDP/TCP transports, registrar, media clock and switch on loopback ports, with the test in
the IVR's place (it answers, connects, collects digits and hangs up through the switch)
and the facts the switch announces kept for assertions."""

from __future__ import annotations

import asyncio
import wave
from dataclasses import dataclass, field
from pathlib import Path

from gateway.analog.sim import SimCard
from gateway.channels.analog import AnalogChannel
from gateway.channels.sip import CarrierConfig, CarrierTrunk, SipChannel, TrunkPolicy
from gateway.core.calls import Call, EndReason
from gateway.core.contracts import Originator
from gateway.core.prompts import PromptLibrary
from gateway.core.steps import Step
from gateway.core.switch import Switch
from gateway.directory import demo_directory
from gateway.media.clock import FrameClock
from gateway.media.endpoint import PortAllocator
from gateway.sip.registrar import Registrar
from gateway.sip.transaction import Timers
from gateway.sip.transaction_asyncio import TransactionLayer
from gateway.sip.transport import TcpServer, TcpTransport, UdpTransport
from tests.e2e.sip.signal import tone_frames
from tests.ports import SIP_INTEROP

HOST = "127.0.0.1"
SIP_PORT = SIP_INTEROP["SIP"]
RTP_LOW, RTP_HIGH = SIP_INTEROP.rtp
PROMPT_TONE_HZ = 1400.0
HOLD_TONE_HZ = 500.0  # the test's hold music


@dataclass
class GatewayUnderTest:
    channel: SipChannel
    switch: Switch
    layer: TransactionLayer
    udp: UdpTransport
    tcp: TcpServer
    clock: FrameClock
    events: CallFacts
    carrier: CarrierTrunk | None = None
    port: int = SIP_PORT
    analog: AnalogChannel | None = None
    card: SimCard | None = None

    async def next_call(self, timeout_s: float = 15.0) -> Call:
        return await asyncio.wait_for(self.events.offered.get(), timeout_s)

    async def ended(self, call: Call, timeout_s: float = 15.0) -> tuple[EndReason, str]:
        async def wait() -> tuple[EndReason, str]:
            while call.call_id not in self.events.ended:
                self.events.ended_event.clear()
                await self.events.ended_event.wait()
            return self.events.ended[call.call_id]

        return await asyncio.wait_for(wait(), timeout_s)

    async def trunk_state(self, up: bool, timeout_s: float = 15.0) -> tuple[str, bool, str]:
        async def wait() -> tuple[str, bool, str]:
            while not self.events.trunks or self.events.trunks[-1][1] is not up:
                self.events.trunk_changed.clear()
                await self.events.trunk_changed.wait()
            return self.events.trunks[-1]

        return await asyncio.wait_for(wait(), timeout_s)

    async def stop(self) -> None:
        if self.carrier is not None:
            await self.carrier.stop()
        if self.analog is not None:
            await self.analog.stop()
        if self.card is not None:
            await self.card.stop()
        await self.switch.stop()
        self.channel.stop()
        self.layer.close()
        self.udp.close()
        await self.tcp.close()
        self.clock.stop()


@dataclass
class CallFacts:
    """CallEvents for the switch plus TrunkEvents for the carrier."""

    offered_q: asyncio.Queue[Call] = field(default_factory=asyncio.Queue)
    ended: dict[str, tuple[EndReason, str]] = field(default_factory=dict)
    ended_event: asyncio.Event = field(default_factory=asyncio.Event)
    trunks: list[tuple[str, bool, str]] = field(default_factory=list)
    trunk_changed: asyncio.Event = field(default_factory=asyncio.Event)
    offers: list[Call] = field(default_factory=list)
    steps: list[tuple[str, Step]] = field(default_factory=list)

    @property
    def offered(self) -> asyncio.Queue[Call]:
        return self.offered_q

    def ended_fact(self, call: Call, reason: EndReason, detail: str) -> None:
        self.ended[call.call_id] = (reason, detail)
        self.ended_event.set()

    def trunk_state(self, trunk: str, up: bool, detail: str) -> None:
        self.trunks.append((trunk, up, detail))
        self.trunk_changed.set()


class SwitchEvents:
    """Adapts CallFacts to the switch's CallEvents protocol."""

    def __init__(self, facts: CallFacts) -> None:
        self.facts = facts

    def offered(self, call: Call) -> None:
        self.facts.offers.append(call)
        self.facts.offered_q.put_nowait(call)

    def answered(self, call: Call) -> None:
        pass

    def bridged(self, call: Call, leg_id: str, endpoint: str) -> None:
        pass

    def ended(
        self, call: Call, reason: EndReason, detail: str, duration_ms: int, talk_ms: int
    ) -> None:
        self.facts.ended_fact(call, reason, detail)

    def step(self, call: Call, step: Step) -> None:
        self.facts.steps.append((call.call_id, step))


def write_tone_prompt(directory: Path, name: str, freq: float, seconds: float) -> None:
    with wave.open(str(directory / f"{name}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(tone_frames(freq, seconds).astype("<i2").tobytes())


async def start_gateway(
    tmp_path: Path,
    *,
    port: int = SIP_PORT,
    timers: Timers | None = None,
    carrier: CarrierConfig | None = None,
    min_se: int = 90,
    trust_pai: bool = True,
    analog_lines: int = 0,
) -> GatewayUnderTest:
    """``analog_lines``: a simulated line card with that many lines as the "analog" trunk
    (outside numbers go there)."""
    prompts = tmp_path / "prompts"
    prompts.mkdir(exist_ok=True)
    write_tone_prompt(prompts, "tone", PROMPT_TONE_HZ, 30.0)
    write_tone_prompt(prompts, "hold", HOLD_TONE_HZ, 3.0)
    facts = CallFacts()
    clock = FrameClock()
    clock.start()
    registrar = Registrar(demo_directory("hotline"), "hotline")
    channel: SipChannel
    layer = TransactionLayer(
        timers or Timers(),
        lambda req, tx: channel.on_request(req, tx),
        lambda resp, addr: channel.on_stray_response(resp, addr),
    )
    channel = SipChannel(
        layer,
        registrar,
        (HOST, port),
        media_host=HOST,
        allocator=PortAllocator(RTP_LOW, RTP_HIGH),
        trunk=TrunkPolicy.of("sip-trunk", ["10000", "10001"], ["127.0.0.0/8"], trust_pai),
        site="conformance",
        min_se=min_se,
    )
    trunk = None
    trunks: dict[str, Originator] = {}
    card = analog = None
    if analog_lines:
        card = SimCard(analog_lines, clock=clock)
        analog = AnalogChannel(card, trunk="analog", did="10000")
        trunks["analog"] = analog
    if carrier is not None:
        trunk = CarrierTrunk(channel, carrier, site="conformance", events=facts)
        trunks[carrier.name] = trunk
    switch = Switch(
        site="conformance",
        events=SwitchEvents(facts),
        clock=clock,
        prompts=PromptLibrary(prompts),
        endpoints=channel,
        trunks=trunks,
        recorder=None,
        answer_timeout_s=30.0,
        number_trunk="analog",
    )
    udp = await UdpTransport.listen(
        HOST,
        port,
        layer.receive,
        lambda data, addr, exc: channel.on_malformed(data, addr, exc, udp),
    )
    tcp = await TcpTransport.listen(HOST, port, layer.receive)
    channel.start(switch, udp)
    if trunk is not None:
        await trunk.start()
    if card is not None and analog is not None:
        await card.start()
        await analog.start(switch)
    return GatewayUnderTest(
        channel, switch, layer, udp, tcp, clock, facts, trunk, port, analog, card
    )
