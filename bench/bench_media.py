"""Media hot-path throughput: G.711 and RTP per 20 ms frame.

Run: .venv/bin/python bench/bench_media.py [--seconds 1.0]

Measures frames/second for µ-law decode+encode of 160-sample frames (the
per-frame work of a bridged call leg) with the gateway's codec (audioop decoding into
int16 arrays, table encoding) and with its numpy tables both ways, and RTP parse+pack,
against CPython's C
``audioop`` (ulaw2lin/lin2ulaw) on the same frames in the same run, and
converts to "channels in real time per core" (frames/s / 50).  The last line
runs the same leg through :class:`RtpSession` (receive one packet, send one
frame, with latching, stats, sequence checks and talkspurt state), to compare
with the bare parse+codec+pack line above it.

The "call ticks" section times whole 20 ms ticks the way the gateway runs them,
without sockets or disk: a bridged call (a packet in on each RtpEndpoint, the
Bridge tick sending a frame out on each, optionally the recording tap of a
SpoolWriter), a leg hearing a prompt (one send_audio of a prompt frame, as the
switch's tick does), and the recording tap alone.  For before/after ratios run
this file against two trees in turn (``PYTHONPATH=<tree>/services``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from gateway.channels.sip.media import SipMedia  # noqa: E402
from gateway.media.bridge import Bridge  # noqa: E402
from gateway.media.endpoint import RtpEndpoint  # noqa: E402
from gateway.media.g711 import (  # noqa: E402
    alaw_decode,
    alaw_encode,
    table_ulaw_decode,
    table_ulaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from gateway.media.prompts import frames as prompt_frames  # noqa: E402
from gateway.media.rtp import RtpPacket, parse_rtp  # noqa: E402
from gateway.media.session import RtpSession  # noqa: E402
from gateway.spool import Spool  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        audioop = None  # type: ignore[assignment]

FRAMES_PER_SECOND_PER_CHANNEL = 50
N_FRAMES = 256


def make_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(160 * N_FRAMES)
    speech_like = np.sin(2 * np.pi * 300 * t / 8000) * 6000 + rng.normal(0, 1500, t.size)
    pcm = np.clip(speech_like, -32768, 32767).astype(np.int16)
    return list(pcm.reshape(N_FRAMES, 160))


class NullTransport:
    """A socket that sends nothing: the loop-side cost of a leg without the syscall."""

    def sendto(self, data: bytes, addr: object = None) -> None:
        pass

    def close(self) -> None:
        pass


class NullDisk:
    """The spool's disk thread, minus the disk: measures what the event loop pays."""

    def submit(self, fn: Callable[..., object], /, *args: object) -> Future[None]:
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def shutdown(self, wait: bool = True) -> None:
        pass


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Frames per second of ``fn`` (which processes a batch and returns its size)."""
    fn()  # warm up
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        done += fn()
        now = time.perf_counter()
        if now >= end:
            return done / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()

    frames = make_frames()
    ulaw = [ulaw_encode(f) for f in frames]
    alaw = [alaw_encode(f) for f in frames]
    [f.tobytes() for f in frames]
    packets = [RtpPacket(0, i, i * 160, 0x1234ABCD, p).pack() for i, p in enumerate(ulaw)]
    alaw_packets = [RtpPacket(8, i, i * 160, 0x5678ABCD, p).pack() for i, p in enumerate(alaw)]

    def ours_ulaw() -> int:
        for b in ulaw:
            ulaw_encode(ulaw_decode(b))
        return N_FRAMES

    def ours_alaw() -> int:
        for b in alaw:
            alaw_encode(alaw_decode(b))
        return N_FRAMES

    def tables_ulaw() -> int:  # the numpy tables the gateway falls back to without audioop
        for b in ulaw:
            table_ulaw_encode(table_ulaw_decode(b))
        return N_FRAMES

    def ours_ulaw_to_alaw() -> int:  # the transcoding bridge path
        for b in ulaw:
            alaw_encode(ulaw_decode(b))
        return N_FRAMES

    def audioop_ulaw() -> int:
        for b in ulaw:
            audioop.lin2ulaw(audioop.ulaw2lin(b, 2), 2)
        return N_FRAMES

    def audioop_ulaw_numpy() -> int:  # same, but yielding the int16 arrays we use
        for b in ulaw:
            audioop.lin2ulaw(np.frombuffer(audioop.ulaw2lin(b, 2), np.int16).tobytes(), 2)
        return N_FRAMES

    def rtp_parse_pack() -> int:
        for d in packets:
            parse_rtp(d).pack()
        return N_FRAMES

    def full_leg() -> int:  # parse + decode in, encode + pack out
        for d in packets:
            p = parse_rtp(d)
            pcm = ulaw_decode(p.payload)
            RtpPacket(0, p.sequence, p.timestamp, p.ssrc, ulaw_encode(pcm)).pack()
        return N_FRAMES

    peer = ("192.0.2.1", 4000)
    session = RtpSession()
    session.configure(peer, "PCMU", 0, 101)
    clock = [0.0]

    def session_leg() -> int:  # receive_datagram + send_audio, 20 ms apart
        now = clock[0]
        receive, send = session.receive_datagram, session.send_audio
        for d in packets:
            now += 0.02
            frames, _ = receive(d, peer, now)
            send(frames[0], now)
        clock[0] = now
        return N_FRAMES

    def run(name: str, fn: Callable[[], int]) -> float:
        r = rate(fn, args.seconds)
        per_core = r / FRAMES_PER_SECOND_PER_CHANNEL
        print(f"{name:<44} {r:>12,.0f} frames/s {per_core:>10,.0f} ch/core")
        return r

    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}; 160-sample frames")
    print(f"{'benchmark':<44} {'throughput':>21} {'realtime':>18}")
    ours = run("ulaw decode+encode (gateway codec)", ours_ulaw)
    run("alaw decode+encode (gateway codec)", ours_alaw)
    run("ulaw->alaw transcode (gateway codec)", ours_ulaw_to_alaw)
    tables = run("ulaw decode+encode (numpy tables)", tables_ulaw)
    base = base_np = None
    if audioop is not None:
        base = run("baseline: audioop ulaw2lin+lin2ulaw", audioop_ulaw)
        base_np = run("baseline: audioop + numpy int16 round trip", audioop_ulaw_numpy)
    rtp = run("RTP parse+pack", rtp_parse_pack)
    leg = run("RTP parse+ulaw decode+encode+pack (one leg)", full_leg)
    sess = run("RtpSession receive+send (one leg, no socket)", session_leg)

    async def adapters() -> tuple[float, float, float]:
        def inbound(ep: RtpEndpoint, dtmf: int | None) -> Callable[[], int]:
            ep.configure(peer, "PCMU", 0, dtmf)
            if isinstance(ep, SipMedia):
                ep.use_inband(dtmf is None)
            ep.on_audio = lambda pcm: None
            ep.on_dtmf = lambda digit: None
            received = ep.datagram_received

            def leg() -> int:
                for d in packets:
                    received(d, peer)
                return N_FRAMES

            return leg

        legs = [  # all made before any is measured
            inbound(RtpEndpoint(None, "x", 0), 101),
            inbound(SipMedia(None, "x", 0), 101),
            inbound(SipMedia(None, "x", 0), None),
        ]
        plain = run("RtpEndpoint datagram in (adapter)", legs[0])
        sip = run("SipMedia datagram in (telephone-event)", legs[1])
        inband = run("SipMedia datagram in (in-band DTMF)", legs[2])
        return plain, sip, inband

    async def calls() -> None:
        """Whole call ticks as the gateway runs them (no socket, no disk)."""

        def endpoint(codec: str, pt: int) -> RtpEndpoint:
            ep = RtpEndpoint(None, "x", 0)
            ep.configure(peer, codec, pt, 101)
            ep.connection_made(NullTransport())  # type: ignore[arg-type]
            return ep

        # NullDisk never releases what a flush reserves: no backlog limit here
        spool = Spool(
            Path(tempfile.mkdtemp(prefix="bench-media-")), NullDisk(), max_pending_bytes=1 << 62
        )

        def bridged(codec_b: str, pt_b: int, recorded: bool) -> Callable[[], int]:
            a, b = endpoint("PCMU", 0), endpoint(codec_b, pt_b)
            tap = spool.open("c", "a", "q", lambda e: None).tap if recorded else None
            bridge = Bridge(a, b, tap=tap)
            a.on_audio, b.on_audio = bridge.from_a.push, bridge.from_b.push
            in_a, in_b, tick = a.datagram_received, b.datagram_received, bridge._tick
            in_b_packets = packets if codec_b == "PCMU" else alaw_packets

            def call() -> int:  # per tick: a packet in on each leg, one frame out on each
                for da, db in zip(packets, in_b_packets, strict=True):
                    in_a(da, peer)
                    in_b(db, peer)
                    tick()
                return N_FRAMES

            return call

        prompt = prompt_frames(np.concatenate(frames))

        def prompt_leg(codec: str, pt: int) -> Callable[[], int]:
            ep = endpoint(codec, pt)
            send = ep.send_audio

            def leg() -> int:  # the switch's tick for a caller hearing a prompt
                for f in prompt:
                    send(f)
                return N_FRAMES

            return leg

        writer = spool.open("c", "a", "q", lambda e: None)

        def tap() -> int:
            t = writer.tap
            for f in frames:
                t(f, f)
            return N_FRAMES

        cases = [
            ("bridged call tick, PCMU both legs", bridged("PCMU", 0, False)),
            ("bridged call tick, PCMU both legs, recorded", bridged("PCMU", 0, True)),
            ("bridged call tick, PCMU<->PCMA, recorded", bridged("PCMA", 8, True)),
            ("prompt leg tick (PCMU)", prompt_leg("PCMU", 0)),
            ("prompt leg tick (PCMA)", prompt_leg("PCMA", 8)),
            ("SpoolWriter.tap (one frame pair)", tap),
        ]
        print()
        print("call ticks (one 'frame' = one 20 ms tick of the whole call; ch/core = calls)")
        for name, fn in cases:
            run(name, fn)

    plain, sip_leg, inband = asyncio.run(adapters())
    asyncio.run(calls())

    print()
    if base is not None and base_np is not None:
        print(f"ulaw gateway codec / audioop         = {ours / base:.2f}x")
        print(f"ulaw gateway codec / audioop+arrays  = {ours / base_np:.2f}x")
    else:
        print("audioop not available (Python >= 3.13): no baseline")
    print(f"ulaw gateway codec / numpy tables    = {ours / tables:.2f}x")
    print(f"RTP parse+pack / ulaw gateway codec  = {rtp / ours:.2f}x")
    print(
        f"one leg: {leg / FRAMES_PER_SECOND_PER_CHANNEL:,.0f} channels in real time per core "
        "(receive + send, excluding socket I/O)"
    )
    print(
        f"RtpSession leg / bare leg            = {sess / leg:.2f}x "
        f"({sess / FRAMES_PER_SECOND_PER_CHANNEL:,.0f} channels per core)"
    )
    print(f"SipMedia / RtpEndpoint (datagram in) = {sip_leg / plain:.2f}x")
    print(f"in-band DTMF leg / RtpEndpoint       = {inband / plain:.2f}x")


if __name__ == "__main__":
    main()
