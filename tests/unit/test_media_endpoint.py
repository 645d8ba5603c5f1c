"""RtpEndpoint over real UDP sockets on 127.0.0.1, and the port allocator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from gateway.media.endpoint import NoFreePort, PortAllocator, RtpEndpoint
from gateway.media.g711 import alaw_encode, ulaw_decode, ulaw_encode
from gateway.media.rfc4733 import event_packets, parse_event
from gateway.media.rtp import RtpPacket, parse_rtp

HOST = "127.0.0.1"
DTMF_PT = 101


class Peer(asyncio.DatagramProtocol):
    """A bare UDP socket playing the remote phone."""

    def __init__(self) -> None:
        self.received: list[RtpPacket] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(parse_rtp(data))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes | RtpPacket, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data.pack() if isinstance(data, RtpPacket) else data, to)


async def make_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    return peer


async def wait_for(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


@pytest.fixture
def allocator() -> PortAllocator:
    return PortAllocator(31000, 31999)


@pytest.fixture
async def ep(allocator: PortAllocator) -> AsyncIterator[RtpEndpoint]:
    e = await RtpEndpoint.open(HOST, allocator)
    yield e
    e.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = await make_peer()
    yield p
    assert p.transport is not None
    p.transport.close()


def tone(n: int = 160, amp: float = 8000.0, freq: float = 400.0) -> np.ndarray:
    t = np.arange(n)
    return (np.sin(2 * np.pi * freq * t / 8000) * amp).astype(np.int16)


# --- port allocation ---------------------------------------------------------


def test_allocator_hands_out_even_ports_round_robin() -> None:
    alloc = PortAllocator(31101, 31110)
    assert alloc.capacity == 5
    ports = [alloc.allocate(HOST) for _ in range(5)]
    assert ports == [31102, 31104, 31106, 31108, 31110]
    with pytest.raises(NoFreePort):
        alloc.allocate(HOST)
    alloc.release(31106)
    assert alloc.allocate(HOST) == 31106


def test_allocator_skips_ports_bound_elsewhere() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((HOST, 31120))
    try:
        alloc = PortAllocator(31120, 31123)
        assert alloc.allocate(HOST) == 31122
        with pytest.raises(NoFreePort):
            alloc.allocate(HOST)
    finally:
        blocker.close()


def test_allocator_rejects_bad_range() -> None:
    with pytest.raises(ValueError):
        PortAllocator(5, 4)
    with pytest.raises(ValueError):
        PortAllocator(31131, 31131)


async def test_open_and_close_release_port(allocator: PortAllocator) -> None:
    e = await RtpEndpoint.open(HOST, allocator)
    assert e.local_port % 2 == 0 and e.local_host == HOST
    assert allocator.in_use == 1
    e.close()
    e.close()
    assert allocator.in_use == 0 and e.closed
    assert not e.send_audio(tone())


async def test_port_reused_at_once_drops_strays_of_its_last_call() -> None:
    alloc = PortAllocator(31140, 31141)  # one port: the next call gets the same one
    old_peer, new_peer = await make_peer(), await make_peer()
    try:
        first = await RtpEndpoint.open(HOST, alloc)
        first.configure(old_peer.addr, "PCMU", 0)
        heard: list[np.ndarray] = []
        first.on_audio = heard.append
        old_peer.send(RtpPacket(0, 1, 160, 0xABC, ulaw_encode(tone())), (HOST, first.local_port))
        await wait_for(lambda: len(heard) == 1)
        first.close()
        assert alloc.previous(first.local_port) == (old_peer.addr, 0xABC)
        await asyncio.sleep(0.01)  # asyncio closes the socket itself on its next iteration

        second = await RtpEndpoint.open(HOST, alloc)  # no hold-back: the port is free now
        assert second.local_port == first.local_port
        second.configure(new_peer.addr, "PCMU", 0)
        got: list[np.ndarray] = []
        second.on_audio = got.append
        old_peer.send(RtpPacket(0, 2, 320, 0xABC, ulaw_encode(tone())), (HOST, 31140))
        await wait_for(lambda: second.stale == 1)
        new_peer.send(RtpPacket(0, 9, 160, 0xDEF, ulaw_encode(tone())), (HOST, 31140))
        await wait_for(lambda: len(got) == 1)
        assert second.latched == new_peer.addr and not heard[1:]
        second.close()
    finally:
        for p in (old_peer, new_peer):
            assert p.transport is not None
            p.transport.close()


# --- receiving ----------------------------------------------------------------


async def test_receive_decodes_and_latches(ep: RtpEndpoint, peer: Peer) -> None:
    frames: list[np.ndarray] = []
    ep.on_audio = frames.append
    ep.configure(("192.0.2.1", 4000), "PCMU", 0)  # SDP address unreachable (NAT)
    assert ep.remote == ("192.0.2.1", 4000)
    pcm = tone()
    peer.send(RtpPacket(0, 10, 1600, 77, ulaw_encode(pcm)), (HOST, ep.local_port))
    await wait_for(lambda: len(frames) == 1)
    assert frames[0].dtype == np.int16 and frames[0].shape == (160,)
    np.testing.assert_array_equal(frames[0], ulaw_decode(ulaw_encode(pcm)))
    assert ep.latched == peer.addr and ep.remote == peer.addr
    # Replies go to the latched address, not the SDP one.
    assert ep.send_audio(pcm)
    await wait_for(lambda: len(peer.received) == 1)
    assert ep.packets_in == 1 and ep.bytes_in == 172
    assert ep.packets_out == 1 and ep.bytes_out == 172


async def test_latch_requires_matching_payload_type(ep: RtpEndpoint) -> None:
    a, b = await make_peer(), await make_peer()
    try:
        got: list[np.ndarray] = []
        ep.on_audio = got.append
        ep.configure((HOST, 9), "PCMA", 8, DTMF_PT)
        a.send(RtpPacket(96, 1, 0, 5, b"\x00" * 160), (HOST, ep.local_port))  # video?
        await wait_for(lambda: ep.unknown_pt == 1)
        assert ep.latched is None
        b.send(RtpPacket(8, 1, 0, 6, alaw_encode(tone())), (HOST, ep.local_port))
        await wait_for(lambda: len(got) == 1)
        assert ep.latched == b.addr
        a.send(RtpPacket(8, 2, 160, 5, alaw_encode(tone())), (HOST, ep.local_port))
        await wait_for(lambda: ep.wrong_source == 1)
        assert len(got) == 1
    finally:
        for p in (a, b):
            assert p.transport is not None
            p.transport.close()


async def test_reconfigure_same_address_keeps_latch_new_address_relatches(
    ep: RtpEndpoint, peer: Peer
) -> None:
    ep.configure((HOST, 9), "PCMU", 0)
    peer.send(RtpPacket(0, 1, 0, 5, b"\xff" * 160), (HOST, ep.local_port))
    await wait_for(lambda: ep.latched is not None)
    ep.configure((HOST, 9), "PCMA", 8)  # re-INVITE, codec change only
    assert ep.latched == peer.addr
    ep.configure((HOST, 11), "PCMA", 8)  # media moved
    assert ep.latched is None and ep.remote == (HOST, 11)


async def test_not_configured_malformed_cn_unknown_never_raise(ep: RtpEndpoint, peer: Peer) -> None:
    got: list[np.ndarray] = []
    ep.on_audio = got.append
    to = (HOST, ep.local_port)
    peer.send(RtpPacket(0, 1, 0, 5, b"\xff" * 160), to)
    await wait_for(lambda: ep.not_ready == 1)
    ep.configure((HOST, 9), "PCMU", 0)
    for junk in (b"\x80", b"\x00" * 5, b"\x40" + b"\x00" * 20, b"\x8f" + b"\x00" * 11):
        peer.send(junk, to)
    peer.send(RtpPacket(0, 2, 160, 5, b"\xff" * 160), to)
    peer.send(RtpPacket(13, 3, 320, 5, b"\x40"), to)  # comfort noise
    peer.send(RtpPacket(18, 4, 480, 5, b"\x00" * 20), to)  # G.729, not negotiated
    await wait_for(lambda: ep.packets_in == 8)
    assert ep.malformed == 4
    assert ep.cn_packets == 1
    assert ep.unknown_pt == 1
    assert len(got) == 1


async def test_long_and_short_payloads_are_reframed(ep: RtpEndpoint, peer: Peer) -> None:
    got: list[np.ndarray] = []
    ep.on_audio = got.append
    ep.configure((HOST, 9), "PCMU", 0)
    pcm = tone(800)
    to = (HOST, ep.local_port)
    peer.send(RtpPacket(0, 1, 0, 5, ulaw_encode(pcm[:480])), to)  # 60 ms packet
    peer.send(RtpPacket(0, 2, 480, 5, ulaw_encode(pcm[480:560])), to)  # 10 ms
    peer.send(RtpPacket(0, 3, 560, 5, ulaw_encode(pcm[560:640])), to)  # 10 ms
    peer.send(RtpPacket(0, 4, 640, 5, ulaw_encode(pcm[640:800])), to)
    await wait_for(lambda: ep.packets_in == 4)
    assert [len(f) for f in got] == [160] * 5
    np.testing.assert_array_equal(np.concatenate(got), ulaw_decode(ulaw_encode(pcm)))


async def test_duplicate_and_late_audio_dropped(ep: RtpEndpoint, peer: Peer) -> None:
    got: list[np.ndarray] = []
    ep.on_audio = got.append
    ep.configure((HOST, 9), "PCMU", 0)
    to = (HOST, ep.local_port)
    for seq in (100, 101, 101, 103, 102, 104):
        peer.send(RtpPacket(0, seq, seq * 160, 5, b"\xff" * 160), to)
    await wait_for(lambda: ep.packets_in == 6)
    assert len(got) == 4 and ep.late == 2
    assert ep.stats.expected == 5 and ep.stats.received == 6  # stats still see them


async def test_dtmf_received_once_per_press(ep: RtpEndpoint, peer: Peer) -> None:
    digits: list[str] = []
    audio: list[np.ndarray] = []
    ep.on_dtmf = digits.append
    ep.on_audio = audio.append
    ep.configure((HOST, 9), "PCMA", 8, DTMF_PT)
    to = (HOST, ep.local_port)
    seq = 0
    for i, d in enumerate("77#"):
        for p in event_packets(d, start_ts=i * 4000, first_seq=seq, ssrc=9, payload_type=DTMF_PT):
            peer.send(p, to)
            seq += 1
    await wait_for(lambda: ep.packets_in == seq)
    assert digits == ["7", "7", "#"]
    assert audio == []
    assert ep.stats.lost == 0 and ep.stats.jitter == 0.0


async def test_callback_errors_are_contained(ep: RtpEndpoint, peer: Peer) -> None:
    def boom(_: Any) -> None:
        raise RuntimeError("consumer bug")

    ep.on_audio = boom
    ep.configure((HOST, 9), "PCMU", 0)
    peer.send(RtpPacket(0, 1, 0, 5, b"\xff" * 160), (HOST, ep.local_port))
    peer.send(RtpPacket(0, 2, 160, 5, b"\xff" * 160), (HOST, ep.local_port))
    await wait_for(lambda: ep.callback_errors == 2)


# --- sending -----------------------------------------------------------------


async def test_send_sequence_timestamp_marker(ep: RtpEndpoint, peer: Peer) -> None:
    ep.configure(peer.addr, "PCMA", 8)
    for _ in range(3):
        ep.send_audio(tone())
    ep.skip()  # nothing to send this tick (empty jitter buffer)
    ep.skip()
    ep.send_audio(tone())
    await wait_for(lambda: len(peer.received) == 4)
    p = peer.received
    assert {x.payload_type for x in p} == {8} and {x.ssrc for x in p} == {ep.ssrc}
    assert [x.marker for x in p] == [True, False, False, True]
    seqs = [x.sequence for x in p]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 2, 3]
    tss = [x.timestamp for x in p]
    assert [(t - tss[0]) & 0xFFFFFFFF for t in tss] == [0, 160, 320, 800]
    assert p[0].payload == alaw_encode(tone())


async def test_initial_seq_ts_ssrc_are_random(allocator: PortAllocator) -> None:
    eps = [await RtpEndpoint.open(HOST, allocator) for _ in range(4)]
    try:
        assert len({e.ssrc for e in eps}) == 4
        assert len({e.session.sequence for e in eps}) > 1
        assert len({e.session.timestamp for e in eps}) > 1
    finally:
        for e in eps:
            e.close()


async def test_send_before_configure_is_noop(ep: RtpEndpoint) -> None:
    assert not ep.send_audio(tone())
    assert ep.packets_out == 0


async def test_send_dtmf_packets(ep: RtpEndpoint, peer: Peer) -> None:
    ep.configure(peer.addr, "PCMU", 0, DTMF_PT)
    ep.send_audio(tone())
    await ep.send_dtmf("5", duration_ms=60)
    ep.send_audio(tone())
    await wait_for(lambda: len(peer.received) == 1 + 5 + 1)
    audio0, *events, audio1 = peer.received
    assert [e.payload_type for e in events] == [DTMF_PT] * 5
    assert {e.timestamp for e in events} == {(audio0.timestamp + 160) & 0xFFFFFFFF}
    assert [e.marker for e in events] == [True] + [False] * 4
    parsed = [parse_event(e.payload) for e in events]
    assert [(x.event, x.end, x.duration) for x in parsed] == [
        (5, False, 160),
        (5, False, 320),
        (5, True, 480),
        (5, True, 480),
        (5, True, 480),
    ]
    seqs = [x.sequence for x in peer.received]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == list(range(7))
    # Audio resumes after the event's time span, as a new talkspurt.
    assert audio1.marker
    assert (audio1.timestamp - events[0].timestamp) & 0xFFFFFFFF >= 480


async def test_send_dtmf_requires_negotiation(ep: RtpEndpoint, peer: Peer) -> None:
    ep.configure(peer.addr, "PCMU", 0)
    with pytest.raises(RuntimeError):
        await ep.send_dtmf("1")


async def test_two_endpoints_dtmf_end_to_end(allocator: PortAllocator) -> None:
    a = await RtpEndpoint.open(HOST, allocator)
    b = await RtpEndpoint.open(HOST, allocator)
    try:
        digits: list[str] = []
        b.on_dtmf = digits.append
        a.configure((HOST, b.local_port), "PCMU", 0, DTMF_PT)
        b.configure((HOST, a.local_port), "PCMU", 0, DTMF_PT)
        await a.send_digits("12", duration_ms=40, gap_ms=20)
        await wait_for(lambda: len(digits) == 2)
        assert digits == ["1", "2"]
    finally:
        a.close()
        b.close()


async def test_configure_rejects_bad_parameters(ep: RtpEndpoint) -> None:
    with pytest.raises(ValueError):
        ep.configure((HOST, 9), "G729", 18)
    with pytest.raises(ValueError):
        ep.configure((HOST, 9), "PCMU", 128)
    ep.configure((HOST, 9), "pcmu", 0)  # SDP encoding names are case-insensitive
    assert ep.codec == "PCMU"
