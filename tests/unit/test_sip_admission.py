"""New-call admission (issue 11, floods): per-source and per-trunk limits on calls per second
and concurrent calls, source limits first, so one source's flood leaves the trunk to others."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.channels.sip import admission
from gateway.channels.sip.admission import Admission, AdmissionLimits

LIMITS = AdmissionLimits(
    source_cps=2,
    source_burst=4,
    source_max_calls=5,
    trunk_cps=100,
    trunk_burst=10,
    trunk_max_calls=8,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_from_one_source_is_cut_at_its_rate_and_others_get_through() -> None:
    clock = Clock()
    adm = Admission(LIMITS, clock)
    answers = [adm.admit(f"flood-{i}", "127.0.0.2", "sip-trunk") for i in range(200)]
    admitted = [a for a in answers if a is None]
    assert len(admitted) == 4  # the burst; then 503 per second of flood
    refusal = answers[-1]
    assert refusal is not None and (refusal.status, refusal.reason) == (
        503,
        "Call Rate Exceeded For Source",
    )
    assert refusal.headers == [("Retry-After", "1")]
    assert adm.admit("genuine", "127.0.0.1", "sip-trunk") is None
    assert adm.calls(source="127.0.0.2") == 4 and adm.calls(trunk="sip-trunk") == 5


def test_concurrent_calls_per_source_are_capped_below_the_trunk() -> None:
    clock = Clock()
    adm = Admission(LIMITS, clock)
    for i in range(50):  # slow enough for the rate, but the calls are never released
        clock.now += 1.0
        adm.admit(f"held-{i}", "127.0.0.2", "sip-trunk")
    assert adm.calls(source="127.0.0.2") == 5
    refusal = adm.admit("one-more", "127.0.0.2", "sip-trunk")
    assert refusal is not None and refusal.reason == "Too Many Calls From Source"
    assert adm.admit("genuine", "127.0.0.1", "sip-trunk") is None  # the trunk has room
    adm.release("held-0")
    assert adm.admit("one-more", "127.0.0.2", "sip-trunk") is None


def test_the_trunk_ceiling_holds_across_sources() -> None:
    clock = Clock()
    adm = Admission(LIMITS, clock)
    for src in range(1, 9):
        assert adm.admit(f"c{src}", f"127.0.0.{src}", "sip-trunk") is None
    refusal = adm.admit("c9", "127.0.0.9", "sip-trunk")
    assert refusal is not None and (refusal.reason, refusal.retry_after_s) == ("Trunk Busy", 5)
    assert adm.admit("other-trunk", "127.0.0.9", "trunk-b") is None


def test_a_source_over_its_limit_does_not_spend_the_trunks_rate() -> None:
    clock = Clock()
    adm = Admission(
        AdmissionLimits(source_cps=1, source_burst=1, trunk_cps=1, trunk_burst=2), clock
    )
    assert adm.admit("a", "127.0.0.2", "t") is None
    for i in range(100):
        assert adm.admit(f"flood-{i}", "127.0.0.2", "t") is not None
    assert adm.admit("genuine", "127.0.0.1", "t") is None  # the trunk's second token


def test_release_is_idempotent_and_a_retransmitted_invite_counts_once() -> None:
    adm = Admission(LIMITS, Clock())
    assert adm.admit("x", "127.0.0.1", "t") is None
    assert adm.admit("x", "127.0.0.1", "t") is None
    assert adm.calls() == 1
    adm.release("x")
    adm.release("x")
    adm.release("never-admitted")
    assert adm.calls() == 0 and adm.calls(source="127.0.0.1") == 0


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("source_cps", 0, "source_cps must be > 0"), ("trunk_max_calls", 0, "at least 1")],
)
def test_limits_are_checked(field: str, value: float, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AdmissionLimits(**{field: value})  # type: ignore[arg-type]


def test_the_gateway_sheds_over_every_trunk_at_its_own_rate_and_recovers() -> None:
    clock = Clock()
    limits = AdmissionLimits(
        source_cps=1000, source_burst=1000, trunk_cps=1000, trunk_burst=1000, gateway_cps=5,
        gateway_burst=10,
    )  # fmt: skip
    adm = Admission(limits, clock)
    answers = [adm.admit(f"c{i}", f"127.0.0.{i % 4 + 1}", f"t{i % 2}") for i in range(40)]
    assert sum(a is None for a in answers) == 10, "the gateway's burst, over sources and trunks"
    refusal = answers[-1]
    assert refusal is not None and (refusal.status, refusal.reason, refusal.retry_after_s) == (
        503,
        "Call Rate Exceeded For Gateway",
        1,
    )
    clock.now += 1.0  # the load drops: five more a second get through again
    assert sum(adm.admit(f"later{i}", "127.0.0.9", "t0") is None for i in range(20)) == 5


def test_the_gateway_ceiling_counts_calls_of_every_trunk_and_frees_on_release() -> None:
    adm = Admission(AdmissionLimits(gateway_max_calls=3), Clock())
    assert adm.headroom() == 3
    for i, trunk in enumerate(("a", "b", "c")):
        assert adm.admit(f"c{i}", f"127.0.0.{i + 1}", trunk) is None
    assert adm.headroom() == 0
    refusal = adm.admit("c3", "127.0.0.9", "d")
    assert refusal is not None and (refusal.reason, refusal.retry_after_s) == (
        "Gateway At Capacity",
        5,
    )
    adm.release("c1")
    assert adm.headroom() == 1 and adm.admit("c3", "127.0.0.9", "d") is None
    assert Admission(AdmissionLimits()).headroom() is None, "no ceiling configured"


def test_calls_are_refused_while_the_platform_answers_late_and_admitted_once_it_catches_up() -> (
    None
):
    # the bench at 40/s on a slow machine: the caps (sized for the gateway) let every call in,
    # the IVR answered them 3 s late on average, and 186 of 1,200 failed instead of being
    # refused up front
    clock = Clock()
    limits = AdmissionLimits(
        source_cps=1000, source_burst=1000, trunk_cps=1000, trunk_burst=1000,
        max_answer_delay_s=2.0,
    )  # fmt: skip
    adm = Admission(limits, clock)
    for i in range(6):
        assert adm.admit(f"c{i}", "127.0.0.1", "t") is None
    for i in range(4):
        adm.answered(f"c{i}", 3.0)
    assert adm.admit("early", "127.0.0.1", "t") is None, "too few answers yet to judge"
    adm.answered("c4", 3.0)
    adm.answered("stranger", 60.0)  # not a call it admitted: ignored
    refusal = adm.admit("late", "127.0.0.1", "t")
    assert refusal is not None and (refusal.status, refusal.reason, refusal.retry_after_s) == (
        503,
        "Platform Overloaded",
        2,
    )
    clock.now += 1.0
    for i in range(5):  # caught up: answers are quick again
        adm.answered("c5" if i == 0 else "early", 0.1)
    assert adm.answer_delay(clock.now) == pytest.approx((5 * 3.0 + 5 * 0.1) / 10)
    clock.now += 1.5  # the late answers are out of the window
    assert adm.admit("after", "127.0.0.1", "t") is None
    clock.now += 10  # no answers at all: nothing to judge on, calls are admitted
    assert adm.answer_delay(clock.now) == 0.0
    off = Admission(AdmissionLimits(max_answer_delay_s=0), clock)
    assert off.admit("x", "127.0.0.1", "t") is None
    for _ in range(10):
        off.answered("x", 30.0)
    assert off.admit("y", "127.0.0.1", "t") is None, "0: no limit"


def test_gateway_limits_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="gateway_cps"):
        AdmissionLimits(gateway_max_calls=-1)


def flood_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name.endswith("admission")]


def test_a_flood_is_logged_when_it_starts_once_a_minute_while_it_lasts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the bench at 100 calls/s over the gateway's 50/s: refusals and admissions alternate all
    # along, and every call let through ended the "flood" in the log: 353 warnings in 30 s
    caplog.set_level(logging.INFO, logger="gateway.channels.sip.admission")
    clock = Clock()
    adm = Admission(LIMITS, clock)
    refused = 0
    for i in range(600):  # 4 calls/s for 150 s against a source rate of 2/s
        clock.now += 0.25
        if adm.admit(f"flood-{i}", "127.0.0.2", "sip-trunk") is None:
            adm.release(f"flood-{i}")
        else:
            refused += 1
    assert refused > 250
    lines = flood_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING] * 3, lines
    assert "from 127.0.0.2 on sip-trunk refused: Call Rate Exceeded For Source" in lines[0][1]
    still = [int(m.group(1)) for _, text in lines[1:] if (m := re.search(r"(\d+) refused", text))]
    assert all("still refused" in text for _, text in lines[1:])
    assert 1 + sum(still) <= refused and sum(still) > 200  # counted, not one line per refusal
    caplog.clear()
    clock.now += 5
    assert adm.admit("genuine-1", "127.0.0.2", "sip-trunk") is None
    assert flood_lines(caplog) == []  # 5 s quiet: not over yet
    clock.now += 6
    assert adm.admit("genuine-2", "127.0.0.2", "sip-trunk") is None
    ((level, text),) = flood_lines(caplog)
    assert level == logging.INFO
    assert f"127.0.0.2 on sip-trunk admitted again: {refused} refused over" in text


def test_the_floods_remembered_for_the_log_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission, "MAX_FLOODS", 8)
    clock = Clock()
    adm = Admission(LIMITS, clock)
    for n in range(40):  # a spray of sources, each over its rate
        for i in range(6):
            adm.admit(f"spray-{n}-{i}", f"10.0.0.{n}", "sip-trunk")
            adm.release(f"spray-{n}-{i}")
        assert len(adm._floods) <= 8
