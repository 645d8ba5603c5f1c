"""FlowRunner with in-memory gateway and ACD: the menu digit chooses the queue, silence falls
back to the default, a hangup stops the flow."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from common import error_info
from hotline.v1 import acd_pb2
from hotline.v1 import gateway_pb2 as gw
from ivr.flows import load_flows, parse_flows
from ivr.runner import FlowRunner
from tests.unit.rpc_errors import rpc_error

FLOWS = load_flows()
HUMAN = FLOWS["10000"]


def call_gone(call_id: str = "c1") -> grpc.aio.AioRpcError:
    return rpc_error(
        grpc.StatusCode.NOT_FOUND,
        f"call {call_id} does not exist or has ended",
        error_info.CALL_NOT_FOUND,
    )


def prompt_missing(prompt: str) -> grpc.aio.AioRpcError:
    return rpc_error(
        grpc.StatusCode.NOT_FOUND,
        f"prompt {prompt!r} not found in /x",
        error_info.PROMPT_NOT_FOUND,
    )


class FakeGateway:
    """Records every command in order; CollectDigits replies come from a script."""

    def __init__(
        self,
        *digits: tuple[str, str],
        fail: dict[str, Exception] | None = None,
        keyed: dict[str, str] | None = None,
    ) -> None:
        self.digits = list(digits)  # (digits, reason) per CollectDigits
        self.fail = fail or {}
        self.keyed = keyed or {}  # prompt -> the digit that interrupts it (barge-in)
        self.fail_after = 0  # calls of a failing command that succeed first
        self.calls: list[gw.CallInfo] = []  # what ListCalls answers
        self.log: list[tuple[str, object]] = []

    def _record(self, name: str, request: object) -> None:
        self.log.append((name, request))
        if name in self.fail and self.names().count(name) > self.fail_after:
            raise self.fail[name]

    async def Answer(  # noqa: N802
        self, request: gw.AnswerRequest, timeout: float | None = None, wait_for_ready: bool = False
    ) -> gw.CallReply:
        self._record("Answer", request)
        return gw.CallReply(call_id=request.call_id, state="answered")

    async def Play(self, request: gw.PlayRequest) -> gw.PlayReply:  # noqa: N802
        self._record("Play", request)
        digit = self.keyed.get(request.prompt, "")
        return gw.PlayReply(call_id=request.call_id, completed=not digit, digit=digit)

    async def CollectDigits(self, request: gw.CollectDigitsRequest) -> gw.CollectDigitsReply:  # noqa: N802
        self._record("CollectDigits", request)
        digits, reason = self.digits.pop(0)
        return gw.CollectDigitsReply(call_id=request.call_id, digits=digits, reason=reason)

    async def Hangup(self, request: gw.HangupRequest) -> gw.CallReply:  # noqa: N802
        self._record("Hangup", request)
        return gw.CallReply(call_id=request.call_id, state="ended")

    async def ListCalls(  # noqa: N802
        self, request: gw.ListCallsRequest, timeout: float | None = None
    ) -> gw.ListCallsReply:
        self._record("ListCalls", request)
        return gw.ListCallsReply(calls=self.calls)

    def names(self) -> list[str]:
        return [name for name, _ in self.log]

    def requests(self, name: str) -> list:
        return [r for n, r in self.log if n == name]


class FakeAcd:
    """Enqueue raises `fail` every time, else the scripted `answers` in turn (exceptions
    raised, a float slept for first), then answers position 1."""

    def __init__(self, fail: Exception | None = None, *answers: Exception | float) -> None:
        self.enqueued: list[acd_pb2.EnqueueRequest] = []
        self.options: list[dict[str, object]] = []
        self.fail = fail
        self.answers = list(answers)

    async def Enqueue(  # noqa: N802
        self, request: acd_pb2.EnqueueRequest, **options: object
    ) -> acd_pb2.EnqueueReply:
        self.enqueued.append(request)
        self.options.append(options)
        if self.fail:
            raise self.fail
        while self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            await asyncio.sleep(answer)
        return acd_pb2.EnqueueReply(call_id=request.call_id, queue=request.queue, position=1)


def outcomes(flow: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("hotline_ivr_calls_total", {"flow": flow, "outcome": outcome})
        or 0.0
    )


@pytest.mark.parametrize(("digit", "queue"), [("1", "sales"), ("2", "support")])
async def test_digit_chooses_the_queue(digit: str, queue: str) -> None:
    before = outcomes("human-service", "queued")
    gateway, acd = FakeGateway((digit, "max_digits")), FakeAcd()
    result = await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000")
    assert result == queue
    assert gateway.names() == ["Answer", "Play", "Play", "CollectDigits"]
    greeting, menu = gateway.requests("Play")
    assert (greeting.call_id, greeting.prompt, greeting.barge_in) == ("c1", "welcome", True)
    assert (menu.prompt, menu.barge_in) == ("menu", True)
    (collect,) = gateway.requests("CollectDigits")
    assert (collect.call_id, collect.max_digits, collect.timeout_ms) == ("c1", 1, 6000)
    (req,) = acd.enqueued
    assert (req.call_id, req.queue, req.priority, req.ani, req.dnis) == (
        "c1",
        queue,
        0,
        "5551234",
        "10000",
    )
    assert dict(req.data) == {"menu": digit, "flow": "human-service"}
    assert outcomes("human-service", "queued") == before + 1


async def test_a_digit_over_the_greeting_skips_the_first_menu_prompt() -> None:
    """The gateway would stop the menu at once for the digit waiting: not asked for."""
    gateway, acd = FakeGateway(("1", "max_digits"), keyed={"welcome": "1"}), FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "sales"
    assert gateway.names() == ["Answer", "Play", "CollectDigits"]
    assert [p.prompt for p in gateway.requests("Play")] == ["welcome"]
    assert acd.enqueued[0].data["menu"] == "1"


async def test_a_wrong_digit_over_the_greeting_still_gets_the_menu_next() -> None:
    gateway = FakeGateway(("7", "max_digits"), ("2", "max_digits"), keyed={"welcome": "7"})
    acd = FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "support"
    assert gateway.names() == ["Answer", "Play", "CollectDigits", "Play", "CollectDigits"]
    assert [p.prompt for p in gateway.requests("Play")] == ["welcome", "menu"]


async def test_a_greeting_stopped_without_a_digit_plays_the_menu() -> None:
    """Not completed but no digit (another command stopped it): nothing waits, ask the menu."""

    class Stopped(FakeGateway):
        async def Play(self, request: gw.PlayRequest) -> gw.PlayReply:  # noqa: N802
            self._record("Play", request)
            return gw.PlayReply(call_id=request.call_id, completed=False, digit="")

    gateway, acd = Stopped(("1", "max_digits")), FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "sales"
    assert [p.prompt for p in gateway.requests("Play")] == ["welcome", "menu"]


async def test_no_digit_twice_goes_to_the_default() -> None:
    gateway, acd = FakeGateway(("", "timeout"), ("", "timeout")), FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "support"
    assert gateway.names() == ["Answer", "Play", "Play", "CollectDigits", "Play", "CollectDigits"]
    (req,) = acd.enqueued
    assert req.queue == "support" and req.data["menu"] == ""


async def test_a_wrong_digit_gets_another_try() -> None:
    gateway, acd = FakeGateway(("7", "max_digits"), ("1", "max_digits")), FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "sales"
    assert len(gateway.requests("CollectDigits")) == 2
    assert acd.enqueued[0].data["menu"] == "1"


async def test_menu_priority_is_passed_to_the_acd() -> None:
    flow = parse_flows(
        {
            "flows": [
                {
                    "dnis": "9",
                    "name": "vip",
                    "menu": {
                        "prompt": "vip-menu",
                        "attempts": 1,
                        "timeout_ms": 1500,
                        "options": {"0": {"queue": "gold", "priority": 7}},
                    },
                }
            ]
        }
    )["9"]
    gateway, acd = FakeGateway(("0", "max_digits")), FakeAcd()
    assert await FlowRunner(gateway, acd).run(flow, "c9", "1", "9") == "gold"
    # no greeting configured: only the menu plays
    assert [p.prompt for p in gateway.requests("Play")] == ["vip-menu"]
    assert gateway.requests("CollectDigits")[0].timeout_ms == 1500
    assert acd.enqueued[0].priority == 7


async def test_hangup_during_the_menu_is_caller_gone() -> None:
    before = outcomes("human-service", "caller-gone")
    gateway, acd = FakeGateway(("", "hangup")), FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "caller-gone"
    assert acd.enqueued == []
    assert "Hangup" not in gateway.names()
    assert len(gateway.requests("CollectDigits")) == 1  # no second attempt
    assert outcomes("human-service", "caller-gone") == before + 1


async def test_call_gone_at_the_gateway_is_caller_gone() -> None:
    gateway = FakeGateway(fail={"Answer": call_gone()})
    acd = FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "caller-gone"
    assert gateway.names() == ["Answer"] and acd.enqueued == []


async def test_a_flow_whose_call_was_taken_over_stops_without_touching_the_call() -> None:
    """Another IVR adopted the call while this one stalled: the gateway refuses this flow's
    commands (FLOW_TAKEN_OVER); the flow stops, no apology, no hang-up, no enqueue."""
    taken = rpc_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        "call c1 is no longer in IVR ivr-a's flow: IVR ivr-b adopted it",
        error_info.FLOW_TAKEN_OVER,
    )
    gateway = FakeGateway(fail={"CollectDigits": taken})
    acd = FakeAcd()
    before = outcomes("human-service", "taken-over")
    runner = FlowRunner(gateway, acd, instance="ivr-a")
    assert await runner.run(HUMAN, "c1", "5551234", "10000") == "taken-over"
    assert gateway.names() == ["Answer", "Play", "Play", "CollectDigits"]
    assert {r.flow_owner for n, r in gateway.log if n != "Answer"} == {"ivr-a"}
    assert acd.enqueued == []
    assert outcomes("human-service", "taken-over") == before + 1


async def test_no_choice_and_no_default_hangs_up() -> None:
    flow = parse_flows(
        {
            "flows": [
                {
                    "dnis": "9",
                    "name": "strict",
                    "menu": {"prompt": "menu", "options": {"1": {"queue": "sales"}}},
                }
            ]
        }
    )["9"]
    gateway, acd = FakeGateway(("", "timeout"), ("5", "max_digits")), FakeAcd()
    assert await FlowRunner(gateway, acd).run(flow, "c1", "1", "9") == "no-choice"
    (hangup,) = gateway.requests("Hangup")
    assert hangup.call_id == "c1" and hangup.reason
    assert acd.enqueued == []


@pytest.mark.parametrize(
    "refusal",
    [
        rpc_error(grpc.StatusCode.INTERNAL, "acd broken"),
        # the flow names a queue the ACD does not have: NOT_FOUND, but not a call that is gone
        rpc_error(grpc.StatusCode.NOT_FOUND, "queue 'sales' does not exist (have: support)"),
    ],
)
async def test_an_acd_refusal_is_told_to_the_caller_and_the_call_ends(
    refusal: grpc.aio.AioRpcError,
) -> None:
    # before, the flow ended "error" (or "caller-gone" for an unknown queue, silently) and the
    # caller was left on an answered, silent line until they hung up
    before = outcomes("human-service", "acd-refused")
    gateway = FakeGateway(("1", "max_digits"))
    acd = FakeAcd(refusal)
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "acd-refused"
    assert len(acd.enqueued) == 1  # not asked again: only an unreachable ACD is
    assert outcomes("human-service", "acd-refused") == before + 1
    assert [p.prompt for p in gateway.requests("Play")][-1] == "unavailable"
    (hangup,) = gateway.requests("Hangup")
    assert hangup.reason == f"the ACD refused the call: {refusal.code().name} {refusal.details()}"
    assert gateway.names()[-1] == "Hangup"


def prompts_missing(prompt: str) -> float:
    labels = {"flow": "human-service", "prompt": prompt}
    return REGISTRY.get_sample_value("hotline_ivr_prompts_missing_total", labels) or 0.0


@pytest.mark.parametrize("missing", ["welcome", "menu"])
async def test_a_missing_flow_prompt_is_skipped_and_the_caller_still_reaches_a_queue(
    missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    # before, the gateway's NOT_FOUND for the prompt was taken for a caller who had hung up:
    # the flow stopped quietly ("caller-gone") and the caller sat on a silent line
    before = prompts_missing(missing)

    class Gateway(FakeGateway):
        async def Play(self, request: gw.PlayRequest) -> gw.PlayReply:  # noqa: N802
            if request.prompt == missing:
                self.log.append(("Play", request))
                raise prompt_missing(missing)
            return await super().Play(request)

    gateway, acd = Gateway(("2", "max_digits")), FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "1", "10000") == "support"
    assert [p.prompt for p in gateway.requests("Play")] == ["welcome", "menu"]
    assert [r.queue for r in acd.enqueued] == ["support"]
    assert prompts_missing(missing) == before + 1
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"prompt {missing!r} not found" in error.getMessage()


async def test_an_unreachable_acd_is_waited_for_with_hold_music() -> None:
    # the fault soak: 16 callers who chose a queue in the second the ACD restarted were left
    # on a silent line until they hung up
    before = outcomes("human-service", "queued")
    gateway = FakeGateway(("1", "max_digits"))
    down = rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    acd = FakeAcd(None, down, 0.6, down, 0.1)  # down, slow while it comes back, down, answers
    assert await FlowRunner(gateway, acd, acd_wait_s=10).run(HUMAN, "c1", "1", "10000") == "sales"
    assert len(acd.enqueued) == 3
    assert all(o["wait_for_ready"] is True for o in acd.options)
    assert all(0 < o["timeout"] <= 10 for o in acd.options)  # type: ignore[operator]
    hold = gateway.requests("Play")[-1]
    assert (hold.call_id, hold.prompt, hold.loop) == ("c1", "hold", True)
    assert "Hangup" not in gateway.names()
    assert outcomes("human-service", "queued") == before + 1


async def test_a_quick_acd_plays_no_hold_music() -> None:
    gateway = FakeGateway(("1", "max_digits"))
    down = rpc_error(grpc.StatusCode.UNAVAILABLE, "not the active replica")
    assert await FlowRunner(gateway, FakeAcd(None, down)).run(HUMAN, "c1", "1", "10000") == "sales"
    assert [p.prompt for p in gateway.requests("Play")] == ["welcome", "menu"]


async def test_an_enqueue_taken_although_its_answer_was_lost_is_queued() -> None:
    gateway = FakeGateway(("1", "max_digits"))
    acd = FakeAcd(
        None,
        rpc_error(grpc.StatusCode.UNAVAILABLE, "Connection reset by peer"),
        rpc_error(grpc.StatusCode.ALREADY_EXISTS, "call c1 is already queued"),
    )
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "1", "10000") == "sales"
    assert "Hangup" not in gateway.names()


async def test_a_flow_run_again_for_a_queued_call_ends_queued() -> None:
    # an offer redelivered after the IVR died: the call went through the menu before and the
    # ACD has it; the flow's job is done, not an error
    before = outcomes("human-service", "queued")
    gateway = FakeGateway(("1", "max_digits"))
    acd = FakeAcd(rpc_error(grpc.StatusCode.ALREADY_EXISTS, "call c1 is already queued"))
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "1", "10000") == "sales"
    assert len(acd.enqueued) == 1 and "Hangup" not in gateway.names()
    assert outcomes("human-service", "queued") == before + 1
    # the greeting and the menu stopped the ACD's hold music: the caller hears it again
    hold = gateway.requests("Play")[-1]
    assert (hold.call_id, hold.prompt, hold.loop) == ("c1", "hold", True)


@pytest.mark.parametrize(
    "answers",
    [
        # refused at once, again and again (the retries run out at the deadline)
        (rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"),) * 99,
        # waited for until the deadline (wait_for_ready)
        (0.8, rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")),
    ],
)
async def test_an_acd_that_stays_away_is_told_to_the_caller_and_the_call_ends(
    answers: tuple[Exception | float, ...],
) -> None:
    before = outcomes("human-service", "acd-unavailable")
    gateway = FakeGateway(("1", "max_digits"))
    acd = FakeAcd(None, *answers)
    assert await FlowRunner(gateway, acd, acd_wait_s=1).run(HUMAN, "c1", "1", "10000") == (
        "acd-unavailable"
    )
    assert [p.prompt for p in gateway.requests("Play")][-2:] == ["hold", "unavailable"]
    (hangup,) = gateway.requests("Hangup")
    assert (hangup.call_id, hangup.reason) == ("c1", "no ACD could take the call within 1 s")
    assert gateway.names()[-1] == "Hangup"
    assert outcomes("human-service", "acd-unavailable") == before + 1


async def test_a_missing_apology_prompt_still_ends_the_call() -> None:
    gateway = FakeGateway(
        ("1", "max_digits"),
        fail={"Play": prompt_missing("hold")},
    )
    gateway.fail_after = 2  # the greeting and the menu play
    acd = FakeAcd(rpc_error(grpc.StatusCode.UNAVAILABLE, "down"))
    assert await FlowRunner(gateway, acd, acd_wait_s=1).run(HUMAN, "c1", "1", "10000") == (
        "acd-unavailable"
    )
    assert gateway.names()[-1] == "Hangup"


async def test_hold_music_refused_because_the_acd_was_quicker_is_no_failure() -> None:
    # the bench at 100/s: the ACD took the call and had it bridged while the IVR's hold music
    # was on its way; the gateway refused the music and the flow was counted an error
    before = outcomes("human-service", "queued")
    gateway = FakeGateway(
        ("1", "max_digits"),
        fail={
            "Play": rpc_error(
                grpc.StatusCode.FAILED_PRECONDITION,
                "call c1 is bridged; prompts play only to answered calls that are not bridged",
            )
        },
    )
    gateway.fail_after = 2  # the greeting and the menu play
    acd = FakeAcd(None, 0.8)  # slow, then queued
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "1", "10000") == "sales"
    assert [p.prompt for p in gateway.requests("Play")][-1] == "hold"
    assert outcomes("human-service", "queued") == before + 1


async def test_a_caller_who_hangs_up_while_waiting_for_the_acd_is_caller_gone() -> None:
    gateway = FakeGateway(
        ("1", "max_digits"),
        fail={"Play": call_gone()},
    )
    gateway.fail_after = 2
    acd = FakeAcd(rpc_error(grpc.StatusCode.UNAVAILABLE, "down"))
    assert await FlowRunner(gateway, acd, acd_wait_s=30).run(HUMAN, "c1", "1", "10000") == (
        "caller-gone"
    )
    await asyncio.sleep(0.3)
    assert len(acd.enqueued) <= 3  # the attempts stopped with the caller, not 30 s later
    assert "Hangup" not in gateway.names()


BROKEN = rpc_error(grpc.StatusCode.INTERNAL, "unexpected error in CollectDigits")


@pytest.mark.parametrize(
    ("listed", "ended"),
    [
        # still in this IVR's hands: the caller hears the apology and the call ends
        (gw.CallInfo(call_id="c1", state="answered", flow_owner="ivr-a"), True),
        # the ACD has taken it meanwhile (it cleared the owner), or it is bridged, or another
        # IVR runs it, or it is gone: left alone
        (gw.CallInfo(call_id="c1", state="answered", flow_owner=""), False),
        (
            gw.CallInfo(call_id="c1", state="bridged", flow_owner="ivr-a", bridged_to="agent1"),
            False,
        ),
        (gw.CallInfo(call_id="c1", state="answered", flow_owner="ivr-b"), False),
        (None, False),
    ],
)
async def test_a_failed_flow_ends_a_call_still_its_own(
    listed: gw.CallInfo | None, ended: bool
) -> None:
    # before, a flow that failed (a gateway error other than "call gone") left the caller on
    # an answered, silent line until they hung up
    before = outcomes("human-service", "error")
    gateway = FakeGateway(fail={"CollectDigits": BROKEN})
    gateway.calls = [listed] if listed is not None else []
    runner = FlowRunner(gateway, FakeAcd(), instance="ivr-a")
    assert await runner.run(HUMAN, "c1", "1", "10000") == "error"
    assert outcomes("human-service", "error") == before + 1
    if ended:
        assert [p.prompt for p in gateway.requests("Play")][-1] == "unavailable"
        (hangup,) = gateway.requests("Hangup")
        assert hangup.reason == (
            "the IVR's flow failed: INTERNAL unexpected error in CollectDigits"
        )
    else:
        assert "Hangup" not in gateway.names()
        assert [p.prompt for p in gateway.requests("Play")] == ["welcome", "menu"]


async def test_a_failed_flow_whose_call_the_gateway_cannot_list_is_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ivr.runner")
    gateway = FakeGateway(
        fail={"CollectDigits": BROKEN, "ListCalls": rpc_error(grpc.StatusCode.UNAVAILABLE, "down")}
    )
    runner = FlowRunner(gateway, FakeAcd(), instance="ivr-a")
    assert await runner.run(HUMAN, "c1", "1", "10000") == "error"
    assert "Hangup" not in gateway.names()
    assert "not ended after its flow failed: down" in caplog.text
