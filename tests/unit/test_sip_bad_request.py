"""The 400 the gateway sends back for a request it cannot parse."""

from __future__ import annotations

import pytest

from gateway.sip.builders import bad_request_for
from gateway.sip.message import SipResponse, parse_message
from gateway.sip.syntax import SipParseError

VIA = "SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKbad1;rport"
FROM = "<sip:5551234@10.0.0.7>;tag=ab12"
TO = "<sip:10000@gw.example>"
CALL_ID = "bad-call@10.0.0.7"
CSEQ = "1 INVITE"


def request(
    *,
    start: str = "INVITE sip:10000@gw.example SIP/2.0",
    extra: list[str] | None = None,
    drop: str | None = None,
    body: bytes = b"",
) -> bytes:
    headers = [
        ("Via", VIA),
        ("From", FROM),
        ("To", TO),
        ("Call-ID", CALL_ID),
        ("CSeq", CSEQ),
        ("Max-Forwards", "70"),
    ]
    lines = [start] + [f"{n}: {v}" for n, v in headers if n != drop] + (extra or [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parsed(data: bytes) -> SipResponse:
    msg = parse_message(data)
    assert isinstance(msg, SipResponse)
    return msg


def test_broken_request_gets_a_400_with_the_routing_headers() -> None:
    data = request(extra=["Content-Length: abc"])
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    out = bad_request_for(data, str(info.value))
    assert out is not None
    resp = parsed(out)  # the 400 itself is well-formed SIP
    assert resp.status == 400
    assert resp.reason.startswith("Bad Request - ")
    assert "non-numeric Content-Length" in resp.reason
    assert resp.headers.get_all("Via") == [VIA]
    assert resp.headers.get("From") == FROM
    assert resp.headers.get("To") == TO
    assert resp.call_id == CALL_ID
    assert resp.cseq == (1, "INVITE")
    assert resp.headers.get("Content-Length") == "0"
    assert resp.body == b""
    assert "Max-Forwards" not in resp.headers


def test_all_vias_are_copied_in_order() -> None:
    second = "SIP/2.0/UDP proxy.example:5060;branch=z9hG4bKproxy"
    out = bad_request_for(request(extra=[f"Via: {second}"]), "bad")
    assert parsed(out).headers.get_all("Via") == [VIA, second]


def test_compact_header_forms_are_understood() -> None:
    data = "\r\n".join(
        [
            "OPTIONS sip:x@gw SIP/2.0",
            f"v: {VIA}",
            f"f: {FROM}",
            f"t: {TO}",
            f"i: {CALL_ID}",
            "CSeq: 2 OPTIONS",
            "",
            "",
        ]
    ).encode()
    resp = parsed(bad_request_for(data, "oops"))
    assert resp.status == 400
    assert resp.headers.get("Via") == VIA and resp.call_id == CALL_ID
    assert resp.cseq == (2, "OPTIONS")


def test_reason_has_no_control_characters_and_is_bounded() -> None:
    problem = "bad\r\nInjected: header\x00\x07\tvalue " + "x" * 500
    out = bad_request_for(request(), problem)
    first_line, _, rest = out.partition(b"\r\n")
    assert first_line.startswith(b"SIP/2.0 400 Bad Request - bad")
    assert b"Injected: header" not in rest  # no header smuggled by the problem text
    assert all(32 <= b < 127 for b in first_line)
    assert len(first_line) <= len("SIP/2.0 400 Bad Request - ") + 100
    resp = parsed(out)
    assert "Injected: header" in resp.reason and "Injected" not in resp.headers


def test_problem_is_in_the_reason() -> None:
    resp = parsed(bad_request_for(request(), "missing mandatory Max-Breadth header"))
    assert resp.reason == "Bad Request - missing mandatory Max-Breadth header"


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_none_when_a_routing_header_is_missing(header: str) -> None:
    assert bad_request_for(request(drop=header), "missing") is None


def test_none_for_a_response() -> None:
    data = "\r\n".join(
        [
            "SIP/2.0 200 OK",
            f"Via: {VIA}",
            f"From: {FROM}",
            f"To: {TO}",
            f"Call-ID: {CALL_ID}",
            f"CSeq: {CSEQ}",
            "Content-Length: x",
            "",
            "",
        ]
    )
    assert bad_request_for(data.encode(), "bad Content-Length") is None


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"garbage\r\n\r\n", b"\xff\xfe\x00binary junk"])
def test_none_for_garbage(data: bytes) -> None:
    assert bad_request_for(data, "garbage") is None


def test_server_header_only_when_given() -> None:
    assert "Server" not in parsed(bad_request_for(request(), "bad")).headers
    resp = parsed(bad_request_for(request(), "bad", server="Hotline/0.1"))
    assert resp.headers.get("Server") == "Hotline/0.1"


def test_a_malformed_ack_is_never_answered() -> None:
    """RFC 3261 17: no response is ever sent to an ACK, not even a 400."""
    ack = (
        b"ACK sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\n"
        b"To: <sip:x@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 ACK\r\nContent-Length: 99\r\n\r\n"
    )
    assert bad_request_for(ack, "Content-Length 99 exceeds the 0 body bytes received") is None
    assert bad_request_for(b"\r\n" + ack, "x") is None
    invite = ack.replace(b"ACK sip", b"INVITE sip").replace(b"1 ACK", b"1 INVITE")
    assert bad_request_for(invite, "x") is not None
