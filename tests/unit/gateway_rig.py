"""A rig for the gateway's switch: in-memory legs, media and channel that record what the
switch asks of them, a clock stepped by hand, a notifier that keeps the facts, and a recorder.
In the style of the ACD dispatcher's fakes; used by the switch and servicer tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway.core.calls import Call, EndReason
from gateway.core.contracts import Attempt, CallerParty, Leg, Offer, Outcome, Release
from gateway.core.prompts import PromptLibrary
from gateway.core.switch import Switch
from gateway.servicer import CallControlServicer
from hotline.v1 import gateway_pb2_grpc

SITE = "unit-site"
LEG_IDS = itertools.count(1)
FRAME = 160


def tone(level: int) -> np.ndarray:
    return np.full(FRAME, level, dtype=np.int16)


class FakeClock:
    """The media clock, stepped by the test."""

    def __init__(self) -> None:
        self._subs: dict[int, Callable[[], None]] = {}
        self._next = 1

    def subscribe(self, cb: Callable[[], None]) -> int:
        self._next += 1
        self._subs[self._next] = cb
        return self._next

    def unsubscribe(self, handle: int) -> None:
        self._subs.pop(handle, None)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for cb in list(self._subs.values()):
                cb()


class FakeMedia:
    def __init__(self) -> None:
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.sent: list[np.ndarray] = []
        self.skipped = 0
        self.closed = False
        self.digits_sent = ""

    def send_audio(self, pcm: np.ndarray) -> bool:
        self.sent.append(pcm)
        return True

    def skip(self, frames: int = 1) -> None:
        self.skipped += frames

    def close(self) -> None:
        self.closed = True

    async def send_digits(self, digits: str) -> None:
        self.digits_sent += digits

    def hear(self, frame: np.ndarray) -> None:
        """A frame arriving from the far end."""
        assert self.on_audio is not None, "nobody listens to this leg"
        self.on_audio(frame)

    def key(self, digit: str) -> None:
        assert self.on_dtmf is not None, "nobody collects digits on this leg"
        self.on_dtmf(digit)


@dataclass(eq=False)
class FakeLeg:
    signalling: FakeChannel
    inbound: bool = True
    answered: bool = False
    ended: bool = False
    media: FakeMedia = field(default_factory=FakeMedia)
    leg_id: str = field(default_factory=lambda: f"leg-{next(LEG_IDS)}")


class FakeChannel:
    """Signalling, EndpointDialer and Originator in one: records every request; the test
    scripts what ringing an endpoint or placing a call does."""

    def __init__(self) -> None:
        self.sink: Switch | None = None
        self.actions: list[tuple[str, Leg]] = []
        self.rung: list[tuple[str, CallerParty, float]] = []
        self.ring_outcome: Callable[[asyncio.Event], object] = lambda abandon: Attempt(
            Outcome.ANSWERED, FakeLeg(self, inbound=False, answered=True)
        )
        self.placed: list[str] = []
        self.diverted: list[str] = []
        self.hold_problem = ""

    def did(self, action: str) -> list[Leg]:
        return [leg for a, leg in self.actions if a == action]

    # Signalling
    def ring(self, leg: Leg) -> None:
        self.actions.append(("ring", leg))

    def answer(self, leg: Leg) -> None:
        assert isinstance(leg, FakeLeg)
        leg.answered = True
        self.actions.append(("answer", leg))

    def reject(self, leg: Leg, detail: str) -> None:
        assert isinstance(leg, FakeLeg)
        leg.ended = True
        self.actions.append(("reject", leg))

    async def hang_up(self, leg: Leg) -> None:
        assert isinstance(leg, FakeLeg)
        leg.ended = True
        self.actions.append(("hang_up", leg))

    def release(self, leg: Leg) -> None:
        assert isinstance(leg, FakeLeg)
        leg.media.close()
        self.actions.append(("release", leg))

    async def hold(self, leg: Leg, held: bool) -> str:
        self.actions.append(("hold" if held else "unhold", leg))
        return self.hold_problem

    # EndpointDialer
    async def ring_endpoint(
        self, target: str, caller: CallerParty, ring_timeout_s: float, abandon: asyncio.Event
    ) -> Attempt:
        self.rung.append((target, caller, ring_timeout_s))
        outcome = self.ring_outcome(abandon)
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        assert isinstance(outcome, Attempt)
        return outcome

    # Originator
    async def originate(
        self,
        number: str,
        policy: str,
        timeout_s: float,
        diverted_from: str = "",
        *,
        standalone: bool = True,
    ) -> Attempt:
        self.placed.append(number)
        self.diverted.append(diverted_from)
        assert self.sink is not None
        leg = FakeLeg(self, inbound=False, answered=True)
        if not standalone:
            return Attempt(Outcome.ANSWERED, leg, "")
        self.sink.offer(
            leg,
            Offer(ani="", dnis=number, trunk="fake", channel="fake", line="fake/1", outbound=True),
        )
        return Attempt(Outcome.ANSWERED, leg, "")

    # the far end
    def new_call(self, ani: str = "13800138000", dnis: str = "10000") -> tuple[FakeLeg, Call]:
        assert self.sink is not None
        leg = FakeLeg(self)
        call_id = self.sink.offer(
            leg, Offer(ani=ani, dnis=dnis, trunk="fake", channel="fake", caller_name="Zhang Wei")
        )
        return leg, self.sink.registry.get(call_id)

    def far_end_hangs_up(self, leg: FakeLeg, why: Release = Release.HANGUP) -> None:
        leg.ended = True
        assert self.sink is not None
        self.sink.leg_released(leg, why, f"{why.value} from far end")


class FakeEvents:
    def __init__(self) -> None:
        self.facts: list[tuple[str, str, dict[str, object]]] = []
        self.steps: list[object] = []

    def offered(self, call: Call) -> None:
        self.facts.append(("offered", call.call_id, {"outbound": call.outbound}))

    def answered(self, call: Call) -> None:
        self.facts.append(("answered", call.call_id, {}))

    def bridged(self, call: Call, leg_id: str, endpoint: str) -> None:
        self.facts.append(
            (
                "bridged",
                call.call_id,
                {
                    "leg_id": leg_id,
                    "endpoint": endpoint,
                    "agent_id": call.agent_id,
                    "queue": call.queue,
                },
            )
        )

    def ended(
        self, call: Call, reason: EndReason, detail: str, duration_ms: int, talk_ms: int
    ) -> None:
        self.facts.append(
            ("ended", call.call_id, {"reason": reason, "detail": detail, "talk_ms": talk_ms})
        )

    def step(self, call: Call, step: object) -> None:
        self.facts.append((type(step).__name__, call.call_id, {"step": step}))
        self.steps.append(step)

    def kinds(self, call_id: str) -> list[str]:
        return [k for k, c, _ in self.facts if c == call_id]

    def of(self, kind: str, call_id: str) -> dict[str, object]:
        found = [d for k, c, d in self.facts if k == kind and c == call_id]
        assert len(found) == 1, f"expected one {kind} for {call_id}, got {found}"
        return found[0]


class FakeRecording:
    def __init__(self, call_id: str, agent_id: str, queue: str) -> None:
        self.call_id, self.agent_id, self.queue = call_id, agent_id, queue
        self.frames: list[tuple[np.ndarray, np.ndarray]] = []
        self.marks: list[tuple[str, str, str]] = []
        self.finished = False

    def tap(self, left: np.ndarray, right: np.ndarray) -> None:
        assert not self.finished, "tap after finish"
        self.frames.append((left, right))

    def hold_started(self, leg_id: str, held_by: str) -> None:
        self.marks.append(("held", leg_id, held_by))

    def hold_ended(self) -> None:
        self.marks.append(("resumed", "", ""))

    async def finish(self) -> None:
        self.finished = True


class FakeRecorder:
    def __init__(self) -> None:
        self.started: list[FakeRecording] = []

    def start(
        self, call_id: str, agent_id: str, queue: str, trace: dict[str, str] | None = None
    ) -> FakeRecording:
        rec = FakeRecording(call_id, agent_id, queue)
        self.started.append(rec)
        return rec


def write_prompt(directory: Path, name: str, frames: int, level: int) -> None:
    with wave.open(str(directory / f"{name}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.full(frames * FRAME, level, dtype="<i2").tobytes())


@dataclass
class Rig:
    switch: Switch
    channel: FakeChannel
    events: FakeEvents
    recorder: FakeRecorder
    clock: FakeClock

    async def answered_call(self) -> tuple[FakeLeg, Call]:
        leg, call = self.channel.new_call()
        self.switch.answer(call.call_id)
        return leg, call

    async def bridged_call(self) -> tuple[FakeLeg, FakeLeg, Call]:
        leg, call = await self.answered_call()
        attempt = await self.switch.connect(call.call_id, "8001", 4.0, "agent1", "sales")
        assert attempt.outcome is Outcome.ANSWERED
        assert isinstance(attempt.leg, FakeLeg)
        return leg, attempt.leg, call


async def make_rig(tmp_path: Path) -> Rig:
    write_prompt(tmp_path, "welcome", frames=3, level=1000)
    write_prompt(tmp_path, "hold", frames=2, level=500)
    channel, events, recorder, clock = FakeChannel(), FakeEvents(), FakeRecorder(), FakeClock()
    switch = Switch(
        site=SITE,
        events=events,
        clock=clock,  # type: ignore[arg-type]
        prompts=PromptLibrary(tmp_path),
        endpoints=channel,
        trunks={"fake": channel},
        recorder=recorder,
        answer_timeout_s=0.2,
        number_trunk="fake",
    )
    channel.sink = switch
    return Rig(switch, channel, events, recorder, clock)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def call_control_stub(switch: Switch) -> AsyncIterator[gateway_pb2_grpc.CallControlStub]:
    """The CallControl servicer on the switch, served in-process; a stub to it."""
    server = grpc.aio.server()
    gateway_pb2_grpc.add_CallControlServicer_to_server(CallControlServicer(switch), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield gateway_pb2_grpc.CallControlStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""
