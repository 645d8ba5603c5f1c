"""REFER's pieces (RFC 3515, 3891, 3420): the Refer-To target, blind or with Replaces, and
the sipfrag bodies of the NOTIFYs."""

from __future__ import annotations

import pytest

from gateway.channels.sip.refer import ReferTarget, parse_refer_to, sipfrag
from gateway.core.contracts import Outcome
from gateway.sip.syntax import SipParseError


def test_a_blind_target() -> None:
    assert parse_refer_to("<sip:8002@10.0.0.1:5060>") == ReferTarget("8002")
    assert parse_refer_to('"Sales" <sip:+861012345@gw;user=phone>') == ReferTarget("+861012345")


def test_a_target_with_replaces() -> None:
    raw = "<sip:8002@gw?Replaces=abc%40host%3Bto-tag%3Dt1%3Bfrom-tag%3Df1>"
    assert parse_refer_to(raw) == ReferTarget("8002", "abc@host", "t1", "f1")


@pytest.mark.parametrize(
    "raw, why",
    [
        ("<sip:gw.example>", "names no extension"),
        ("<sip:sales@gw>", "not an extension or number"),
        ("<sip:8002@gw?Replaces=>", "no Call-ID"),
        ("<mailto:x@y>", "scheme"),
    ],
)
def test_targets_we_cannot_reach_are_refused_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(SipParseError, match=why):
        parse_refer_to(raw)


def test_sipfrag_bodies() -> None:
    assert sipfrag(None) == b"SIP/2.0 100 Trying\r\n"
    assert sipfrag(Outcome.ANSWERED) == b"SIP/2.0 200 OK\r\n"
    assert sipfrag(Outcome.BUSY) == b"SIP/2.0 486 Busy Here\r\n"
    assert all(sipfrag(o).startswith(b"SIP/2.0 ") for o in Outcome)
