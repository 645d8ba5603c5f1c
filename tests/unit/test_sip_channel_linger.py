"""What a finished call leaves behind in the SIP channel: right after hang-up (the switch
releases the legs of an ended call at once, it has no linger of its own) its legs, media,
bridge and recording are gone (nothing the transaction layer or the channel keeps for late
retransmissions refers to them), while the dialog still answers the other side's late
messages: a retransmitted BYE gets the same 200 OK, a new BYE a 200, a late CANCEL of the
answered INVITE a 200, and a retransmitted 2xx to our INVITE is ACKed again.

A real SIP channel and switch on loopback UDP; the trunk caller and the agent's phone are two
plain UDP sockets of the test."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.channels.sip import SipChannel, TrunkPolicy
from gateway.channels.sip.leg import FinishedDialog
from gateway.core.prompts import PromptLibrary
from gateway.core.switch import Switch
from gateway.media.clock import FrameClock
from gateway.media.endpoint import PortAllocator
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.registrar import Binding, Registrar
from gateway.sip.transaction import Timers
from gateway.sip.transaction_asyncio import TransactionLayer
from gateway.sip.transport import UdpTransport
from gateway.sip.uri import NameAddr
from tests.unit.gateway_rig import FakeEvents, FakeRecorder, write_prompt

SDP = (
    "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


class Peer(asyncio.DatagramProtocol):
    """A UDP socket standing for a SIP peer: what it receives is parsed and queued."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.raw: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def open(cls) -> Peer:
        peer = cls()
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        assert peer.transport is not None
        peer.port = peer.transport.get_extra_info("sockname")[1]
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        self.inbox.put_nowait(parse_message(data))

    def send(self, text: str, port: int) -> None:
        assert self.transport is not None
        head, _, body = text.partition("\r\n\r\n")
        data = f"{head}\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}".encode()
        self.transport.sendto(data, ("127.0.0.1", port))

    async def next(self, what: str, timeout: float = 5.0) -> SipRequest | SipResponse:
        """The next message that is the request ``what`` or has the status ``what``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            msg = await asyncio.wait_for(self.inbox.get(), max(0.01, left))
            got = msg.method if isinstance(msg, SipRequest) else str(msg.status)
            if got == what:
                return msg

    async def quiet(self, what: str, wait: float = 0.3) -> bool:
        """True if nothing ``what`` arrives within ``wait``."""
        try:
            await self.next(what, wait)
        except asyncio.TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Rig:
    sip: SipChannel
    switch: Switch
    events: FakeEvents
    recorder: FakeRecorder
    caller: Peer
    phone: Peer
    port: int


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    write_prompt(tmp_path, "hold", frames=2, level=500)
    registrar = Registrar({}, "hotline")
    # T1 stays RFC-sized: Timer L and J (32 s) outlive the test, as they outlive the linger
    sip = SipChannel(
        TransactionLayer(
            Timers(),
            lambda req, tx: sip.on_request(req, tx),
            lambda resp, addr: sip.on_stray_response(resp, addr),
        ),
        registrar,
        ("127.0.0.1", 0),
        media_host="127.0.0.1",
        allocator=PortAllocator(26000, 26099),
        trunk=TrunkPolicy.of("trunk", ("10000",), ("127.0.0.1/32",)),
        site="unit-site",
    )
    clock = FrameClock()
    clock.start()
    events, recorder = FakeEvents(), FakeRecorder()
    switch = Switch(
        site="unit-site",
        events=events,
        clock=clock,
        prompts=PromptLibrary(tmp_path),
        endpoints=sip,
        trunks={},
        recorder=recorder,
    )
    udp = await UdpTransport.listen("127.0.0.1", 0, sip.layer.receive, lambda *a: None)
    port = udp.local_addr[1]
    sip.port = port
    caller, phone = await Peer.open(), await Peer.open()
    registrar.bindings["8001"] = Binding(
        "8001",
        NameAddr.parse(f"<sip:8001@127.0.0.1:{phone.port}>"),
        ("127.0.0.1", phone.port),
        udp,
        time.monotonic() + 3600,
    )
    sip.start(switch, udp)
    try:
        yield Rig(sip, switch, events, recorder, caller, phone, port)
    finally:
        caller.close()
        phone.close()
        sip.stop()
        await switch.stop()
        sip.layer.close()
        udp.close()
        clock.stop()


def invite(r: Rig) -> str:
    return (
        f"INVITE sip:10000@127.0.0.1:{r.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{r.caller.port};branch=z9hG4bKcaller1;rport\r\n"
        f"From: <sip:13800138000@127.0.0.1:{r.caller.port}>;tag=c1\r\n"
        f"To: <sip:10000@127.0.0.1:{r.port}>\r\n"
        "Call-ID: linger-call@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:13800138000@127.0.0.1:{r.caller.port}>\r\nMax-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\n\r\n" + SDP.format(port=r.caller.port + 2)
    )


def in_dialog(r: Rig, method: str, cseq: int, branch: str, to_tag: str) -> str:
    return (
        f"{method} sip:hotline@127.0.0.1:{r.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{r.caller.port};branch={branch};rport\r\n"
        f"From: <sip:13800138000@127.0.0.1:{r.caller.port}>;tag=c1\r\n"
        f"To: <sip:10000@127.0.0.1:{r.port}>;tag={to_tag}\r\n"
        f"Call-ID: linger-call@127.0.0.1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n\r\n"
    )


def phone_ok(r: Rig, inv: SipRequest) -> str:
    vias = "".join(f"Via: {v}\r\n" for v in inv.headers.get_all("Via"))
    return (
        "SIP/2.0 200 OK\r\n" + vias + f"From: {inv.require('From')}\r\n"
        f"To: {inv.require('To')};tag=p1\r\nCall-ID: {inv.call_id}\r\n"
        f"CSeq: {inv.require('CSeq')}\r\nContact: <sip:8001@127.0.0.1:{r.phone.port}>\r\n"
        "Content-Type: application/sdp\r\n\r\n" + SDP.format(port=r.phone.port + 2)
    )


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cyclic garbage collector stopped for the test: what is freed was freed by
    reference counting."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("phone_answers_bye", [True, False])
async def test_a_finished_call_keeps_only_what_answers_late_retransmissions(
    rig: Rig, phone_answers_bye: bool, collector_off: None
) -> None:
    r = rig
    # the caller's INVITE, answered; the agent's phone rung, answered and bridged
    r.caller.send(invite(r), r.port)
    await until(lambda: r.switch.registry.live())
    call = r.switch.registry.live()[0]
    r.switch.answer(call.call_id)
    ok = await r.caller.next("200")
    assert isinstance(ok, SipResponse)
    to_tag = ok.to.tag or ""
    r.caller.send(
        in_dialog(r, "ACK", 1, "z9hG4bKcaller1ack", to_tag).replace("CSeq: 1 ACK", "CSeq: 1 ACK"),
        r.port,
    )
    connect = asyncio.ensure_future(r.switch.connect(call.call_id, "8001", 5.0, "a1", "sales"))
    inv = await r.phone.next("INVITE")
    assert isinstance(inv, SipRequest)
    r.phone.send(phone_ok(r, inv), r.port)
    ack = await r.phone.next("ACK")
    assert (await connect).leg is not None
    assert call.bridge is not None and r.recorder.started
    caller_leg, agent_leg = call.caller, call.agent
    assert agent_leg is not None
    held = {
        "call": weakref.ref(call),
        "caller leg": weakref.ref(caller_leg),
        "agent leg": weakref.ref(agent_leg),
        "caller media": weakref.ref(caller_leg.media),
        "agent media": weakref.ref(agent_leg.media),
        "bridge": weakref.ref(call.bridge),
        "recording": weakref.ref(r.recorder.started[0]),
    }
    # the caller hangs up: 200 OK, and our BYE to the phone
    bye = in_dialog(r, "BYE", 2, "z9hG4bKcallerbye", to_tag)
    r.caller.send(bye, r.port)
    first = await r.caller.next("200")
    assert first.cseq == (2, "BYE")
    bye_ours = await r.phone.next("BYE")
    assert isinstance(bye_ours, SipRequest)
    if phone_answers_bye:
        r.phone.send(
            "SIP/2.0 200 OK\r\n"
            + "".join(f"Via: {v}\r\n" for v in bye_ours.headers.get_all("Via"))
            + f"From: {bye_ours.require('From')}\r\nTo: {bye_ours.require('To')}\r\n"
            f"Call-ID: {bye_ours.call_id}\r\nCSeq: {bye_ours.require('CSeq')}\r\n\r\n",
            r.port,
        )
        # the switch released both legs at once (no linger of its own); our BYE's task
        # ends with the phone's 200
        await until(lambda: not r.sip._dialogs and not r.switch._tasks)
    else:
        # a phone that never answers: our BYE is retransmitted for 64*T1, and waiting for
        # its answer holds nothing of the leg
        await until(lambda: not r.sip._dialogs)
        assert await r.phone.next("BYE")  # Timer E: the BYE again
        assert r.switch._tasks  # the hang-up still waits for the BYE's final
    assert set(r.sip._finished) == {"linger-call@127.0.0.1", inv.call_id}
    del call, caller_leg, agent_leg, connect, ok
    r.recorder.started.clear()  # the fake recorder's own list
    # freed by reference counting alone (the collector is off): a reference cycle through
    # the call would keep it, its media and its recording until a full collection
    alive = [name for name, ref in held.items() if ref() is not None]
    assert alive == [], f"still referenced after hang-up, or only in reference cycles: {alive}"

    # a retransmitted BYE: the same 200 OK, from the BYE's transaction (Timer J)
    sent_before = len(r.caller.raw)
    r.caller.send(bye, r.port)
    await r.caller.next("200")
    assert r.caller.raw[sent_before] == r.caller.raw[sent_before - 1]
    # a new BYE for the finished dialog: it is over, 200 (not 481)
    r.caller.send(in_dialog(r, "BYE", 3, "z9hG4bKcallerbye2", to_tag), r.port)
    late = await r.caller.next("200")
    assert late.cseq == (3, "BYE")
    # a late CANCEL of the answered INVITE matches its transaction (Timer L): 200 (RFC 3261
    # 9.2), and nothing else happens
    r.caller.send(
        invite(r)
        .split("\r\nContact:")[0]
        .replace("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        + "\r\nMax-Forwards: 70\r\n\r\n",
        r.port,
    )
    cancelled = await r.caller.next("200")
    assert cancelled.cseq == (1, "CANCEL")
    # a retransmitted INVITE is absorbed by its transaction (Timer L): no new call
    r.caller.send(invite(r), r.port)
    assert await r.caller.quiet("200")
    assert not r.switch.registry.live()
    # the phone retransmits its 2xx (our ACK lost): it is ACKed again, along the dialog
    r.phone.send(phone_ok(r, inv), r.port)
    again = await r.phone.next("ACK")
    assert isinstance(again, SipRequest) and isinstance(ack, SipRequest)
    assert again.cseq == ack.cseq == (1, "ACK")
    assert again.call_id == inv.call_id


async def test_finished_dialogs_are_forgotten_after_64_t1_by_one_timer(tmp_path: Path) -> None:
    """Every released leg's record lives 64*T1; one timer (at the oldest record's end) serves
    them all, and a record that replaced an older one for the same Call-ID is not forgotten
    at the older one's time."""
    timers = Timers(t1=0.005)  # 64*T1 = 0.32 s
    sip = SipChannel(
        TransactionLayer(timers, lambda req, tx: None),
        Registrar({}, "hotline"),
        ("127.0.0.1", 5060),
        media_host="127.0.0.1",
        allocator=PortAllocator(26100, 26109),
        trunk=TrunkPolicy.of("trunk", ("10000",), ("127.0.0.1/32",)),
        site="unit-site",
    )
    udp = await UdpTransport.listen("127.0.0.1", 0, sip.layer.receive, lambda *a: None)
    try:

        def record(call_id: str) -> FinishedDialog:
            return FinishedDialog(call_id, "leg", udp, ("127.0.0.1", 5070), True, True, None)

        first, second, again = record("a@h"), record("b@h"), record("a@h")
        sip._linger(first)
        sip._linger(second)
        assert set(sip._finished) == {"a@h", "b@h"} and len(sip._forget_queue) == 2
        timer = sip._forget_timer
        assert timer is not None
        # "a@h" released again (a newer record): the first one's expiry must leave it alone
        sip._linger(again)
        assert sip._forget_timer is timer  # still one timer, at the oldest record's end
        assert sip._finished["a@h"] is again
        await until(lambda: "b@h" not in sip._finished, timeout=5.0)
        assert sip._finished.get("a@h") is again or not sip._forget_queue
        await until(lambda: not sip._finished, timeout=5.0)
        assert not sip._forget_queue and sip._forget_timer is None
    finally:
        sip.stop()
        sip.layer.close()
        udp.close()
