"""FlowRunner with in-memory gateway and ACD: the menu digit chooses the queue, silence falls
back to the default, a hangup stops the flow."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from hotline.v1 import acd_pb2
from hotline.v1 import gateway_pb2 as gw
from ivr.flows import load_flows, parse_flows
from ivr.runner import FlowRunner

FLOWS = load_flows()
HUMAN = FLOWS["10000"]


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


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
        self.log: list[tuple[str, object]] = []

    def _record(self, name: str, request: object) -> None:
        self.log.append((name, request))
        if name in self.fail:
            raise self.fail[name]

    async def Answer(self, request: gw.AnswerRequest) -> gw.CallReply:  # noqa: N802
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

    def names(self) -> list[str]:
        return [name for name, _ in self.log]

    def requests(self, name: str) -> list:
        return [r for n, r in self.log if n == name]


class FakeAcd:
    def __init__(self, fail: Exception | None = None) -> None:
        self.enqueued: list[acd_pb2.EnqueueRequest] = []
        self.fail = fail

    async def Enqueue(self, request: acd_pb2.EnqueueRequest) -> acd_pb2.EnqueueReply:  # noqa: N802
        self.enqueued.append(request)
        if self.fail:
            raise self.fail
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
    gateway = FakeGateway(fail={"Answer": rpc_error(grpc.StatusCode.NOT_FOUND, "no call c1")})
    acd = FakeAcd()
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "caller-gone"
    assert gateway.names() == ["Answer"] and acd.enqueued == []


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


async def test_acd_failure_is_an_error_not_a_crash() -> None:
    before = outcomes("human-service", "error")
    gateway = FakeGateway(("1", "max_digits"))
    acd = FakeAcd(fail=rpc_error(grpc.StatusCode.UNAVAILABLE, "acd down"))
    assert await FlowRunner(gateway, acd).run(HUMAN, "c1", "5551234", "10000") == "error"
    assert len(acd.enqueued) == 1
    assert outcomes("human-service", "error") == before + 1
