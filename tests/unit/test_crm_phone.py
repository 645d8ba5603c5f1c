"""Caller numbers normalise to national digits whatever the signalling looked like."""

from __future__ import annotations

import pytest

from crm.phone import normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13800138000", "13800138000"),
        ("+8613800138000", "13800138000"),
        ("008613800138000", "13800138000"),
        ("+86 138-0013-8000", "13800138000"),
        ("sip:+8613800138000@203.0.113.9:5060", "13800138000"),
        ("SIP:5551234@127.0.0.1;transport=udp", "5551234"),
        ("sips:0086-10-62345678@carrier", "1062345678"),
        ("tel:+86-21-58881234", "2158881234"),
        ("010-62345678", "01062345678"),
        ("(415) 555-0123", "4155550123"),
        ("  1000 ", "1000"),
        ("sipp", ""),
        ("sip:sipp@127.0.0.1", ""),
        ("", ""),
        ("anonymous", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_country_code_is_stripped_only_as_a_prefix() -> None:
    assert normalise("13886000000") == "13886000000"
    assert normalise("5550086") == "5550086"
