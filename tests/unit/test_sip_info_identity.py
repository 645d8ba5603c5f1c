"""INFO DTMF bodies (dtmf-relay, dtmf), P-Asserted-Identity (RFC 3325) and Diversion
(RFC 5806)."""

from __future__ import annotations

import pytest

from gateway.sip.identity import (
    asserted_identity,
    diversion_header,
    diversions,
    number_of,
    pai_header,
    privacy_id,
)
from gateway.sip.info_dtmf import InfoDtmfError, dtmf_relay_body, parse_info_dtmf
from gateway.sip.message import SipRequest, parse_message


@pytest.mark.parametrize(
    ("ctype", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("Application/DTMF-Relay; charset=x", b"Signal= *\r\nDuration= 250\r\n", "*"),
        ("application/dtmf-relay", b"signal=11\nduration=100\n", "#"),
        ("application/dtmf", b"9", "9"),
        ("application/dtmf", b"10\r\n", "*"),
        ("application/dtmf", b"d", "D"),
    ],
)
def test_info_dtmf_bodies_as_phones_send_them(ctype: str, body: bytes, digit: str) -> None:
    assert parse_info_dtmf(ctype, body) == digit


@pytest.mark.parametrize(
    ("ctype", "body", "problem"),
    [
        ("application/dtmf-relay", b"Duration=160\r\n", "no Signal= line"),
        ("application/dtmf-relay", b"Signal=X\r\n", "'X' is not a DTMF key"),
        ("application/dtmf", b"55", "'55' is not a DTMF key"),
        ("text/plain", b"5", "text/plain does not carry DTMF"),
        (None, b"5", r"\(none\) does not carry DTMF"),
        ("application/dtmf", b"\xff", "not ASCII"),
    ],
)
def test_bad_info_dtmf_says_what_is_wrong(ctype: str | None, body: bytes, problem: str) -> None:
    with pytest.raises(InfoDtmfError, match=problem):
        parse_info_dtmf(ctype, body)


def test_dtmf_relay_body_round_trips() -> None:
    assert parse_info_dtmf("application/dtmf-relay", dtmf_relay_body("#")) == "#"


def invite(*extra: str) -> SipRequest:
    head = (
        "INVITE sip:10000@gw SIP/2.0\r\nVia: SIP/2.0/UDP c;branch=z9hG4bK1\r\n"
        "From: <sip:anonymous@c>;tag=1\r\nTo: <sip:10000@gw>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
    )
    msg = parse_message((head + "".join(e + "\r\n" for e in extra) + "\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_asserted_identity_takes_the_first_usable_value() -> None:
    req = invite(
        "P-Asserted-Identity: garbage<<",
        'P-Asserted-Identity: "Zhang Wei" <sip:+8613800138000@carrier>, <tel:+8613800138000>',
    )
    pai = asserted_identity(req)
    assert pai is not None and number_of(pai) == "+8613800138000" and pai.display == "Zhang Wei"
    assert asserted_identity(invite()) is None
    tel = asserted_identity(invite("P-Asserted-Identity: <tel:+4930123>"))
    assert tel is not None and number_of(tel) == "+4930123"


def test_privacy_id() -> None:
    assert privacy_id(invite("Privacy: id"))
    assert privacy_id(invite("Privacy: header;user"))
    assert not privacy_id(invite("Privacy: none"))
    assert not privacy_id(invite())


def test_diversions_newest_first_with_reason_and_counter() -> None:
    req = invite(
        "Diversion: <sip:8001@pbx>;reason=no-answer;counter=2, "
        "<sip:10001@pbx>;reason=unconditional",
        "Diversion: <tel:+861012345>",
    )
    got = diversions(req)
    assert [(d.number, d.reason, d.counter) for d in got] == [
        ("8001", "no-answer", 2),
        ("10001", "unconditional", 1),
        ("+861012345", "unknown", 1),
    ]


def test_headers_we_send() -> None:
    assert (
        pai_header("+861088", "carrier.example", "Hotline")
        == '"Hotline" <sip:+861088@carrier.example>'
    )
    assert diversion_header("10000", "gw") == "<sip:10000@gw>;reason=unconditional;counter=1"
