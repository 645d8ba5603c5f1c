"""The room mixer: each party hears the sum of the parties it may hear, never itself;
clipping instead of wrap-around; a room of 30+; hold music as a source; the recording tap."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.media.mixer import full_room, mix_for
from gateway.media.room import Room
from tests.unit.gateway_rig import FakeClock, FakeMedia, tone


def frames(*levels: int) -> np.ndarray:
    return np.stack([tone(level) for level in levels])


def test_a_full_room_gives_each_party_the_others_and_never_itself() -> None:
    levels = (1, 10, 100, 1000)
    out = mix_for(frames(*levels), full_room(4), full=True)
    assert [int(row[0]) for row in out] == [1110, 1101, 1011, 111]


def test_the_general_matrix_agrees_with_the_full_room_fast_path() -> None:
    rng = np.random.default_rng(7)
    pcm = rng.integers(-3000, 3000, size=(31, 160), dtype=np.int16)
    assert np.array_equal(
        mix_for(pcm, full_room(31), full=True), mix_for(pcm, full_room(31), full=False)
    )


def test_sums_clip_instead_of_wrapping() -> None:
    loud = mix_for(frames(30000, 30000, 30000), full_room(3), full=True)
    assert int(loud[0][0]) == 32767
    quiet = mix_for(frames(-30000, -30000, -30000), full_room(3))
    assert int(quiet[0][0]) == -32768


def test_a_listener_only_matrix_and_a_bad_shape() -> None:
    hears = np.zeros((3, 3), dtype=np.bool_)
    hears[2, 0] = hears[2, 1] = True  # party 2 listens to 0 and 1, nobody hears 2
    out = mix_for(frames(5, 7, 900), hears)
    assert [int(row[0]) for row in out] == [0, 0, 12]
    with pytest.raises(ValueError, match="does not fit"):
        mix_for(frames(1, 2), hears)


class Loop:
    def __init__(self, level: int) -> None:
        self.level = level

    def next_frame(self) -> np.ndarray:
        return tone(self.level)


def test_a_room_of_thirty_two_sends_each_leg_the_others() -> None:
    clock, room = FakeClock(), Room()
    media = [FakeMedia() for _ in range(32)]
    for i, m in enumerate(media):
        room.join(f"p{i}", m)
    room.hear({f"p{i}": {f"p{j}" for j in range(32)} for i in range(32)})
    room.start(clock)  # type: ignore[arg-type]
    for i, m in enumerate(media):
        m.hear(tone(i + 1))
    clock.tick()
    total = sum(range(1, 33))
    assert [int(m.sent[-1][0]) for m in media] == [total - (i + 1) for i in range(32)]


def test_held_party_hears_music_and_nobody_hears_it_and_the_tap_records_both() -> None:
    clock, taps = FakeClock(), []
    room = Room(lambda left, right: taps.append((int(left[0]), int(right[0]))), tap_key="caller")
    caller, agent = FakeMedia(), FakeMedia()
    room.join("caller", caller)
    room.join("agent", agent)
    room.add_source("moh", Loop(444))
    room.hear({"caller": {"moh"}, "agent": set()})
    room.start(clock)  # type: ignore[arg-type]
    caller.hear(tone(11))
    agent.hear(tone(22))
    clock.tick()
    assert int(caller.sent[-1][0]) == 444
    assert agent.sent == [] and agent.skipped == 1
    assert taps == [(11, 444)]


def test_stop_hands_the_audio_callbacks_back_and_leave_works_while_running() -> None:
    clock, room = FakeClock(), Room()
    a, b = FakeMedia(), FakeMedia()

    def before(frame: np.ndarray) -> None:
        return None

    a.on_audio = before
    room.join("a", a)
    room.join("b", b)
    room.start(clock)  # type: ignore[arg-type]
    assert a.on_audio is not before
    room.leave("b")
    assert b.on_audio is None
    room.stop()
    assert a.on_audio is before
    room.stop()  # idempotent
