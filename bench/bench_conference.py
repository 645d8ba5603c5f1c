"""Conference mixing cost: one 30-party room and ten 3-party rooms, per mixed party per 20 ms
tick, against the two-party bridge's cost per call in the same run (the ratio is the figure).

Run: .venv/bin/python bench/bench_conference.py [--seconds 1.0]

Every leg is an in-memory media stream (a frame in, the mix out), so what is measured is the
gateway's own work per tick - jitter buffers, mixing, sending - not the network. Lines:
  bridge        one two-party Bridge tick (two legs), per call
  room 30       one 30-party Room tick, per party, and the ratio to the bridge per call
  rooms 10x3    ten 3-party Room ticks, per party, and the ratio to the bridge per call
  hold/whisper  a 3-party room with a held party or a whisperer (the matrix product path)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from gateway.media.bridge import Bridge
from gateway.media.room import Room

FRAME = 160


class Leg:
    """A media stream that always has a frame to give and drops what it is sent."""

    def __init__(self, level: int) -> None:
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.frame = np.full(FRAME, level, dtype=np.int16)
        self.sent = 0

    def send_audio(self, pcm: np.ndarray) -> bool:
        self.sent += 1
        return True

    def skip(self, frames: int = 1) -> None:
        pass

    def feed(self) -> None:
        if self.on_audio is not None:
            self.on_audio(self.frame)


class Clock:
    def subscribe(self, cb: Callable[[], None]) -> int:
        return 1

    def unsubscribe(self, handle: int) -> None:
        pass


def per_tick(work: Callable[[], None], seconds: float) -> float:
    """Seconds of CPU per call of ``work``."""
    work()
    n, start = 0, time.process_time()
    end = start + seconds
    while True:
        for _ in range(50):
            work()
        n += 50
        now = time.process_time()
        if now >= end:
            return (now - start) / n


def bridge_tick() -> Callable[[], None]:
    a, b = Leg(100), Leg(200)
    bridge = Bridge(a, b, tap=lambda x, y: None)
    bridge.start(Clock())  # type: ignore[arg-type]

    def tick() -> None:
        a.feed()
        b.feed()
        bridge._tick()

    return tick


def room(n: int, hearing: str = "full") -> tuple[Room, list[Leg]]:
    legs = [Leg(10 * (i + 1)) for i in range(n)]
    r = Room(tap=lambda x, y: None, tap_key="p0")
    for i, leg in enumerate(legs):
        r.join(f"p{i}", leg)
    keys = [f"p{i}" for i in range(n)]
    plan = {k: set(keys) for k in keys}
    if hearing == "hold":
        r.add_source("moh", type("Moh", (), {"next_frame": lambda self: legs[0].frame})())
        plan = {"p0": {"moh"}, **{k: set(keys) - {"p0"} for k in keys[1:]}}
    elif hearing == "whisper":
        plan = {"p0": {"p1"}, "p1": {"p0", "p2"}, "p2": {"p0", "p1"}}
    r.hear(plan)
    r.start(Clock())  # type: ignore[arg-type]
    return r, legs


def room_tick(rooms: list[tuple[Room, list[Leg]]]) -> Callable[[], None]:
    def tick() -> None:
        for r, legs in rooms:
            for leg in legs:
                leg.feed()
            r.tick()

    return tick


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    s = ap.parse_args().seconds
    bridge = per_tick(bridge_tick(), s)
    big = per_tick(room_tick([room(30)]), s) / 30
    small = per_tick(room_tick([room(3) for _ in range(10)]), s) / 30
    held = per_tick(room_tick([room(3, "hold")]), s) / 3
    whisper = per_tick(room_tick([room(3, "whisper")]), s) / 3
    print(f"bridge        {bridge * 1e6:8.1f} us CPU per call per tick (two legs)")
    for name, cost in (
        ("room 30", big),
        ("rooms 10x3", small),
        ("hold 3", held),
        ("whisper 3", whisper),
    ):
        print(
            f"{name:13} {cost * 1e6:8.1f} us CPU per party per tick"
            f"   = {cost / bridge:5.2f} x the bridge per call"
        )
    print(f"one core mixes about {int(0.02 / big):d} parties of big rooms in real time")


if __name__ == "__main__":
    main()
