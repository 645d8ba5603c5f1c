"""The wrap-up form: codes, notes and the follow-up that becomes a callback task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crm.disposition import DispositionError, FollowUp, check

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
CODES = {"resolved", "complaint"}


def test_a_plain_disposition() -> None:
    form = check({"code": "resolved", "notes": "  fixed  "}, CODES, "13800138000", NOW)
    assert (form.code, form.notes, form.follow_up) == ("resolved", "fixed", None)


def test_a_follow_up_calls_the_caller_back_unless_told_otherwise() -> None:
    due = "2026-11-30T09:30:00+08:00"
    form = check(
        {"code": "complaint", "follow_up": {"due_at": due}}, CODES, "sip:+8613800138000@t", NOW
    )
    assert form.follow_up == FollowUp(datetime(2026, 11, 30, 1, 30, tzinfo=UTC), "13800138000", "")
    form = check(
        {
            "code": "complaint",
            "follow_up": {"due_at": "2026-11-30T01:30Z", "phone": "010-6234 5678"},
        },
        CODES,
        "",
        NOW,
    )
    assert form.follow_up is not None and form.follow_up.phone == "01062345678"


@pytest.mark.parametrize(
    ("body", "caller", "message"),
    [
        ({}, "1", "missing field: code"),
        ({"code": 3}, "1", "missing field: code"),
        ({"code": "sold"}, "1", "must be one of: complaint, resolved"),
        ({"code": "resolved", "notes": 5}, "1", "notes must be a string"),
        ({"code": "resolved", "notes": "x" * 2001}, "1", "longer than 2000"),
        ({"code": "resolved", "follow_up": "soon"}, "1", "must be an object"),
        ({"code": "resolved", "follow_up": {}}, "1", "must be an ISO-8601 time"),
        ({"code": "resolved", "follow_up": {"due_at": "30/11"}}, "1", "not an ISO-8601"),
        ({"code": "resolved", "follow_up": {"due_at": "2026-11-30T09:00"}}, "1", "time zone"),
        ({"code": "resolved", "follow_up": {"due_at": "2026-11-29T07:58Z"}}, "1", "in the past"),
        ({"code": "resolved", "follow_up": {"due_at": "2027-06-01T00:00Z"}}, "1", "90 days"),
        (
            {"code": "resolved", "follow_up": {"due_at": "2026-11-30T00:00Z"}},
            "sipp",
            "phone is needed",
        ),
    ],
)
def test_bad_forms_name_the_field(body: dict[str, object], caller: str, message: str) -> None:
    with pytest.raises(DispositionError, match=message):
        check(body, CODES, caller, NOW)


def test_a_due_time_a_few_seconds_behind_is_clock_skew_not_an_error() -> None:
    due = (NOW - timedelta(seconds=20)).isoformat()
    assert check(
        {"code": "resolved", "follow_up": {"due_at": due}}, CODES, "5551234", NOW
    ).follow_up
