"""Tests for gateway.sip.message: parser strictness, RFC 4475-style torture cases, round trips."""

from __future__ import annotations

import pytest

from gateway.sip.builders import make_response, new_branch, new_call_id, new_tag
from gateway.sip.framing import StreamFramer
from gateway.sip.headers import Headers, split_header_list
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.syntax import SipParseError
from gateway.sip.uri import NameAddr, SipUri, parse_name_addr, parse_uri
from gateway.sip.via import Via, parse_via

SDP = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.1.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.1.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


def sipp_invite(body: bytes = SDP, content_length: int | None = None) -> bytes:
    """An INVITE shaped like SIPp's built-in uac scenario."""
    cl = len(body) if content_length is None else content_length
    return (
        b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.1.1:5061;branch=z9hG4bK-12345-1-0\r\n"
        b"From: sipp <sip:sipp@127.0.1.1:5061>;tag=12345SIPpTag001\r\n"
        b"To: service <sip:service@127.0.0.1:5060>\r\n"
        b"Call-ID: 1-12345@127.0.1.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Contact: sip:sipp@127.0.1.1:5061\r\n"
        b"Max-Forwards: 70\r\n"
        b"Subject: Performance Test\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: " + str(cl).encode() + b"\r\n"
        b"\r\n" + body
    )


def minimal(
    method: bytes = b"OPTIONS",
    extra: bytes = b"",
    drop: bytes | None = None,
    cseq: bytes | None = None,
    body: bytes = b"",
) -> bytes:
    headers = [
        b"Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKnashds7",
        b"From: <sip:alice@example.com>;tag=1928301774",
        b"To: <sip:bob@example.com>",
        b"Call-ID: a84b4c76e66710",
        b"CSeq: " + (cseq if cseq is not None else b"314159 " + method),
        b"Max-Forwards: 70",
    ]
    if drop is not None:
        headers = [h for h in headers if not h.lower().startswith(drop.lower() + b":")]
    text = b"\r\n".join([method + b" sip:bob@example.com SIP/2.0"] + headers) + b"\r\n" + extra
    return text + b"\r\n" + body


# ---------------------------------------------------------------------------
# Valid messages


def test_sipp_invite_with_sdp_parses() -> None:
    msg = parse_message(sipp_invite())
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert msg.uri == "sip:service@127.0.0.1:5060"
    assert msg.call_id == "1-12345@127.0.1.1"
    assert msg.cseq == (1, "INVITE")
    assert msg.body == SDP
    assert msg.top_via.branch == "z9hG4bK-12345-1-0"
    assert msg.top_via.sent_by == ("127.0.1.1", 5061)
    assert msg.from_.tag == "12345SIPpTag001"
    assert msg.from_.display == "sipp"
    assert msg.to.tag is None
    assert msg.to.uri.port == 5060
    assert msg.headers.get("content-type") == "application/sdp"
    assert msg.request_uri.user == "service"


def test_round_trip_is_byte_identical_for_canonical_input() -> None:
    raw = sipp_invite()
    assert parse_message(raw).to_bytes() == raw
    again = parse_message(parse_message(raw).to_bytes())
    assert again == parse_message(raw)


def test_response_parse_and_round_trip() -> None:
    raw = (
        b"SIP/2.0 486 Busy Here\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;received=192.0.2.1;rport=5062\r\n"
        b"From: <sip:a@example.com>;tag=1\r\n"
        b"To: <sip:b@example.com>;tag=2\r\n"
        b"Call-ID: c1\r\n"
        b"CSeq: 7 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (486, "Busy Here")
    assert msg.cseq == (7, "INVITE")
    via = msg.top_via
    assert via.received == "192.0.2.1" and via.rport == 5062 and via.has_rport
    assert msg.to_bytes() == raw


def test_reason_phrase_with_spaces_and_empty_reason() -> None:
    raw = minimal().replace(
        b"OPTIONS sip:bob@example.com SIP/2.0", b"SIP/2.0 481 Call/Transaction Does Not Exist"
    )
    assert parse_message(raw).reason == "Call/Transaction Does Not Exist"
    raw = minimal().replace(b"OPTIONS sip:bob@example.com SIP/2.0", b"SIP/2.0 200 ")
    assert parse_message(raw).reason == ""


def test_compact_headers_are_expanded() -> None:
    raw = (
        b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=9\r\n"
        b"t: <sip:b@example.com>\r\n"
        b"i: compact@h\r\n"
        b"CSeq: 2 MESSAGE\r\n"
        b"m: <sip:a@10.0.0.1>\r\n"
        b"c: text/plain\r\n"
        b"k: timer\r\n"
        b"s: hello\r\n"
        b"e: gzip\r\n"
        b"o: presence\r\n"
        b"u: dialog\r\n"
        b"r: <sip:c@example.com>\r\n"
        b"b: <sip:a@example.com>\r\n"
        b"l: 2\r\n\r\nhi"
    )
    msg = parse_message(raw)
    names = [n for n, _ in msg.headers]
    assert names == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Type",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Event",
        "Allow-Events",
        "Refer-To",
        "Referred-By",
        "Content-Length",
    ]
    assert msg.call_id == "compact@h"
    assert msg.headers.get("i") == "compact@h"  # compact lookups work too
    assert msg.body == b"hi"
    assert b"\r\nCall-ID: compact@h\r\n" in msg.to_bytes()


def test_torture_whitespace_folding_and_escapes() -> None:
    """In the spirit of RFC 4475 3.1.1.1 (wsinv): LWS everywhere, folding, escapes."""
    body = b"v=0\r\n"
    raw = (
        b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
        b"TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
        b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n'
        b"  ;\r\n  tag = 98asjd8\r\n"
        b"MaX-fOrWaRdS: 0068\r\n"
        b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
        b"Content-Length   : " + str(len(body)).encode() + b"\r\n"
        b"cseq: 0009\r\n  INVITE\r\n"
        b"Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"
        b"s :\r\n"
        b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
        b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
        b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n"
        b"  branch  =   z9hG4bK9ikj8  ,\r\n"
        b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n"
        b" z9hG4bK30239\r\n"
        b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n'
        b"      newvalue ;\r\n  secondparam ; q = 0.33\r\n"
        b"\r\n" + body
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest)
    assert msg.cseq == (9, "INVITE")
    assert msg.headers.get("max-forwards") == "0068"
    assert msg.to.tag == "1918181833n"
    assert str(msg.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    vias = msg.via
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    contact = parse_name_addr(msg.headers.get("Contact") or "")
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    route = parse_name_addr(msg.headers.get("Route") or "")
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert msg.body == body
    # Serialization re-emits one canonical header per line; it parses back identically.
    assert parse_message(msg.to_bytes()) == msg


def test_unknown_method_accepted_when_cseq_matches() -> None:
    """RFC 4475 3.1.1.2: any token is a legal method."""
    method = b"!interesting-Method0123456789_*+`.%indeed'~"
    msg = parse_message(minimal(method=method))
    assert isinstance(msg, SipRequest)
    assert msg.method == method.decode()
    assert msg.cseq == (314159, method.decode())


def test_unknown_request_uri_scheme_is_left_to_the_tu() -> None:
    """RFC 4475 3.1.2.8 (the TU answers 416): the parser must not reject it."""
    raw = minimal().replace(
        b"OPTIONS sip:bob@example.com", b"OPTIONS nobodyknowsthisscheme:totallyopaquecontent"
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest)
    assert msg.uri == "nobodyknowsthisscheme:totallyopaquecontent"
    with pytest.raises(SipParseError, match="unsupported URI scheme"):
        _ = msg.request_uri


def test_multiple_vias_on_one_line_and_across_lines_keep_order() -> None:
    extra = (
        b"Via: SIP/2.0/TCP b.example.com;branch=z9hG4bK2, "
        b"SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK3\r\n"
    )
    msg = parse_message(minimal(extra=extra))
    assert [v.host for v in msg.via] == ["host.example.com", "b.example.com", "[2001:db8::9]"]
    assert msg.via[2].port == 5070 and msg.via[2].host_ip == "2001:db8::9"
    assert msg.to_bytes().count(b"\r\nVia: ") == 3


def test_contact_list_split_respects_quotes_and_brackets() -> None:
    extra = (
        b'Contact: "Doe, John" <sip:j@a.example.com;x=1,2>;q=0.5, '
        b"<sip:j@b.example.com>;expires=60\r\n"
    )
    msg = parse_message(minimal(extra=extra))
    contacts = [parse_name_addr(c) for c in msg.headers.get_all("Contact")]
    assert [c.display for c in contacts] == ["Doe, John", None]
    assert contacts[0].uri.params == {"x": "1,2"}
    assert contacts[0].params == {"q": "0.5"}
    assert contacts[1].params == {"expires": "60"}


def test_leading_crlf_and_bare_lf_line_endings_tolerated() -> None:
    raw = b"\r\n\r\n" + minimal().replace(b"\r\n", b"\n")
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest) and msg.call_id == "a84b4c76e66710"


def test_body_longer_than_content_length_is_truncated() -> None:
    """UDP: trailing octets after the declared body are dropped (RFC 3261 18.3)."""
    msg = parse_message(minimal(extra=b"Content-Length: 4\r\n", body=b"abcdJUNK"))
    assert msg.body == b"abcd"


def test_missing_content_length_on_udp_takes_rest_of_datagram() -> None:
    assert parse_message(minimal(body=b"xyz")).body == b"xyz"


def test_version_is_case_insensitive_in_request_line() -> None:
    raw = minimal().replace(b"SIP/2.0\r\nVia", b"sip/2.0\r\nVia", 1)
    assert parse_message(raw).method == "OPTIONS"


# ---------------------------------------------------------------------------
# Invalid messages


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "empty"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nVia: x", "no empty line"),
        (minimal().replace(b"SIP/2.0\r\nVia", b"SIP/7.0\r\nVia", 1), "unsupported SIP version"),
        (
            minimal().replace(b"OPTIONS sip:bob@example.com SIP/2.0", b"SIP/3.0 200 OK"),
            "unsupported SIP version",
        ),
        (
            minimal().replace(
                b"OPTIONS sip:bob@example.com SIP/2.0", b"OPTIONS  sip:bob@example.com SIP/2.0"
            ),
            "bad request line",
        ),
        (
            minimal().replace(
                b"OPTIONS sip:bob@example.com SIP/2.0", b"OPTIONS sip:bob@example.com"
            ),
            "bad request line",
        ),
        (
            minimal().replace(
                b"OPTIONS sip:bob@example.com SIP/2.0", b"OPTIONS sip:bob @example.com SIP/2.0"
            ),
            "bad request line",
        ),
        (
            minimal().replace(b"OPTIONS sip:bob@example.com SIP/2.0", b"OPTIONS bob SIP/2.0"),
            "bad Request-URI",
        ),
        (
            minimal().replace(
                b"OPTIONS sip:bob@example.com SIP/2.0", b"OPT{ONS sip:bob@example.com SIP/2.0"
            ),
            "bad method",
        ),
        (
            minimal().replace(
                b"OPTIONS sip:bob@example.com SIP/2.0", b"SIP/2.0 4294967301 Very Big"
            ),
            "bad status code",
        ),
        (
            minimal().replace(b"OPTIONS sip:bob@example.com SIP/2.0", b"SIP/2.0 99 Low"),
            "bad status code",
        ),
        (minimal(extra=b"This line has no colon\r\n"), "without colon"),
        (minimal(extra=b"Bad Name: x\r\n"), "bad header name"),
        (minimal(drop=b"Via"), "missing mandatory Via"),
        (minimal(drop=b"From"), "missing mandatory From"),
        (minimal(drop=b"To"), "missing mandatory To"),
        (minimal(drop=b"Call-ID"), "missing mandatory Call-ID"),
        (minimal(drop=b"CSeq"), "missing mandatory CSeq"),
        (minimal(cseq=b"abc OPTIONS"), "bad CSeq number"),
        (minimal(cseq=b"1"), "CSeq must be"),
        (minimal(cseq=b"1 INVITE"), "does not match request method"),
        (minimal(method=b"ACK", cseq=b"1 INVITE"), "does not match request method"),
        (minimal(method=b"CANCEL", cseq=b"1 INVITE"), "does not match request method"),
        (minimal(cseq=b"4294967296 OPTIONS"), "bad CSeq number"),
        (minimal(extra=b"Content-Length: 9999\r\n", body=b"short"), "exceeds"),
        (minimal(extra=b"Content-Length: -999\r\n"), "non-numeric Content-Length"),
        (minimal(extra=b"Content-Length: 1x\r\n"), "non-numeric Content-Length"),
        (minimal(extra=b"Content-Length: 1\r\nl: 2\r\n", body=b"ab"), "conflicting"),
        (minimal(extra=b"Call-ID: second\r\n"), "duplicate Call-ID"),
        (minimal(extra=b"t: <sip:other@example.com>\r\n"), "duplicate To"),
        (
            minimal().replace(
                b"SIP/2.0/UDP host.example.com", b"SIP/2.0/UDP host.example.com:99999"
            ),
            "out of range",
        ),
        (
            minimal().replace(b"SIP/2.0/UDP host.example.com", b"HTTP/1.1/UDP host.example.com"),
            "Via",
        ),
    ],
)
def test_invalid_messages_raise_with_a_reason(raw: bytes, needle: str) -> None:
    with pytest.raises(SipParseError, match=needle):
        parse_message(raw)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(SipParseError, ValueError)


def test_unterminated_display_name_is_an_error_when_read() -> None:
    """RFC 4475 3.1.2.?: an unterminated quoted string in From is malformed."""
    raw = minimal().replace(
        b"From: <sip:alice@example.com>", b'From: "Alice <sip:alice@example.com>'
    )
    msg = parse_message(raw)
    with pytest.raises(SipParseError, match="unterminated quoted string"):
        _ = msg.from_


def test_require_gives_the_header_or_a_parse_error() -> None:
    msg = parse_message(minimal())
    assert msg.require("Call-ID") == msg.headers.get("Call-ID")
    assert msg.require("i") == msg.call_id  # compact names work as in Headers.get
    msg.headers.remove("To")
    with pytest.raises(SipParseError, match="missing To header"):
        msg.require("To")
    with pytest.raises(SipParseError, match="missing To header"):
        _ = msg.to


# ---------------------------------------------------------------------------
# Headers


def test_headers_multimap_semantics() -> None:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    h.add("X-Custom", "1")
    h.add("via", "SIP/2.0/UDP b;branch=z9hG4bK2, SIP/2.0/UDP c;branch=z9hG4bK3")
    h.add("x-custom", "2")
    assert h.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get("v") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert len(h.get_all("Via")) == 3
    assert h.get_all("X-CUSTOM") == ["1", "2"]
    assert "x-custom" in h and "Missing" not in h
    assert h.get("Missing", "dflt") == "dflt"
    h.set("X-Custom", "3")
    assert h.get_all("x-custom") == ["3"]
    assert [n for n, _ in h][:2] == ["Via", "X-Custom"]  # set keeps the first position
    h.set_first("Via", "SIP/2.0/UDP z;branch=z9hG4bK0")
    assert h.get_all("Via")[0].startswith("SIP/2.0/UDP z") and len(h.get_all("Via")) == 3
    h.remove("via")
    assert "Via" not in h and len(h) == 1
    h.add("i", "cid")
    assert list(h)[-1] == ("Call-ID", "cid")


def test_headers_refuse_injection() -> None:
    h = Headers()
    with pytest.raises(ValueError):
        h.add("X-Name", "evil\r\nVia: injected")
    with pytest.raises(ValueError):
        h.add("Bad Name", "x")


def test_headers_fields_keep_the_wire_spelling_and_round_trip() -> None:
    msg = parse_message(
        minimal(extra=b"VIA: SIP/2.0/UDP p;branch=z9hG4bK9\r\nv: SIP/2.0/UDP q;branch=z9hG4bK8\r\n")
    )
    vias = msg.headers.fields("via")
    assert [(k, n) for k, n, _ in vias] == [("via", "Via"), ("via", "VIA"), ("via", "Via")]
    assert [v for _, _, v in vias] == msg.headers.get_all("Via")
    copy = Headers.from_fields(msg.headers.fields())
    assert copy == msg.headers and copy.fields() == msg.headers.fields()
    copy.add("X-New", "1")
    assert "X-New" not in msg.headers  # fields() handed out a new list


def test_headers_to_text_sets_one_content_length() -> None:
    h = Headers([("Content-Length", "99"), ("X-A", "1"), ("l", "7")])
    assert h.to_text(3) == "Content-Length: 3\r\nX-A: 1\r\n\r\n"
    assert Headers([("X-A", "1")]).to_text(0) == "X-A: 1\r\nContent-Length: 0\r\n\r\n"
    assert Headers().to_text(0, "SIP/2.0 200 OK") == "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_split_header_list() -> None:
    assert split_header_list('a, "b,c" <sip:x>, <sip:y;p=1,2>;q=1,,') == [
        "a",
        '"b,c" <sip:x>',
        "<sip:y;p=1,2>;q=1",
    ]
    with pytest.raises(SipParseError):
        split_header_list('"unterminated, x')


# ---------------------------------------------------------------------------
# URIs / name-addr / Via


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.com",
        "sips:alice:secret@example.com:5061;transport=tcp",
        "sip:example.com;lr",
        "sip:+15551234567;phone-context=example.com@gw.example.com;user=phone",
        "sip:user@[2001:db8::1]:5060;maddr=[2001:db8::2]",
        "sip:bob@192.0.2.4?subject=project%20x&priority=urgent",
        "sip:user;par=u%40example.net@example.com",
        "tel:+1-201-555-0123;phone-context=example.com",
    ],
)
def test_uri_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_uri_fields() -> None:
    u = parse_uri("SIP:alice:pw@[::1]:5070;Transport=TCP;lr?Subject=hi")
    assert u == SipUri(
        "sip", "alice", "pw", "[::1]", 5070, {"transport": "TCP", "lr": None}, {"Subject": "hi"}
    )
    assert u.host_ip == "::1"
    tel = parse_uri("tel:+442071234567")
    assert (tel.scheme, tel.user, tel.host) == ("tel", "+442071234567", "")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "alice@example.com",
        "http://example.com/",
        "sip:alice@",
        "sip:@example.com",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:port",
        "sip:alice@example.com:0",
        "sip:alice@[2001:db8::1",
        "sip:alice@[zz::1]",
        "sip:a@b;=x",
        "sip:a@b?noequals",
    ],
)
def test_bad_uris_raise(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_name_addr_forms() -> None:
    na = parse_name_addr(
        '"Alice \\"the\\" Agent" <sip:alice@example.com;transport=udp>;tag=abc;expires=60'
    )
    assert na.display == 'Alice "the" Agent'
    assert na.uri.params == {"transport": "udp"}
    assert na.params == {"tag": "abc", "expires": "60"}
    assert na.tag == "abc"
    assert parse_name_addr(str(na)) == na

    tokens = parse_name_addr("Bob  Smith <sip:bob@example.com>")
    assert tokens.display == "Bob Smith"
    assert parse_name_addr("Jürgen Müller <sip:j@example.com>").display == "Jürgen Müller"

    # addr-spec form: params after the URI belong to the header (RFC 3261 20.10)
    bare = parse_name_addr("sip:carol@example.com;tag=xyz;user=phone")
    assert bare.display is None
    assert bare.uri.params == {}
    assert bare.params == {"tag": "xyz", "user": "phone"}
    assert str(bare) == "<sip:carol@example.com>;tag=xyz;user=phone"

    assert str(NameAddr(None, parse_uri("sip:d@example.com"))) == "<sip:d@example.com>"


@pytest.mark.parametrize(
    "text",
    [
        '"Alice" sip:alice@example.com',
        "<sip:alice@example.com",
        "<sip:a@b> junk",
        "Al@ce <sip:a@b>",
        "",
        "Bell, Alexander <sip:a.g.bell@example.com>",
    ],
)
def test_bad_name_addr_raises(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


def test_parse_classmethods_and_functions_agree() -> None:
    for cls, fn, text in [
        (SipUri, parse_uri, "sips:bob:pw@[2001:db8::1]:5061;transport=tcp?h=v"),
        (NameAddr, parse_name_addr, '"Bob \\"B\\"" <sip:bob@x.example>;tag=9'),
        (Via, parse_via, "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKx;rport"),
    ]:
        parsed = cls.parse(text)
        assert isinstance(parsed, cls) and parsed == fn(text)
        assert cls.parse(str(parsed)) == parsed


def test_via_parse_and_str() -> None:
    v = parse_via("SIP/2.0/udp 10.0.0.1:5062;branch=z9hG4bKabc;rport;received=1.2.3.4")
    assert v == Via(
        "UDP", "10.0.0.1", 5062, {"branch": "z9hG4bKabc", "rport": None, "received": "1.2.3.4"}
    )
    assert v.has_rport and v.rport is None and v.received == "1.2.3.4"
    assert str(v) == "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport;received=1.2.3.4"
    v6 = parse_via("SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK1")
    assert v6.port is None and v6.host_ip == "2001:db8::1"
    for bad in ("SIP/2.0 UDP host", "SIP/2.0/UDP", "SIP/1.0/UDP host", "SIP/2.0/UDP host:abc"):
        with pytest.raises(SipParseError):
            parse_via(bad)


# ---------------------------------------------------------------------------
# make_response and identifiers


def test_make_response_copies_rfc3261_8_2_6_fields() -> None:
    extra = (
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\n"
        b"Record-Route: <sip:proxy.example.com;lr>\r\nTimestamp: 54\r\n"
    )
    req = parse_message(minimal(method=b"INVITE", extra=extra))
    assert isinstance(req, SipRequest)
    resp = make_response(req, 180, to_tag="totag", extra=[("Contact", "<sip:gw@10.0.0.5>")])
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.to.tag == "totag"
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.headers.get_all("Record-Route") == ["<sip:proxy.example.com;lr>"]
    assert resp.headers.get("Contact") == "<sip:gw@10.0.0.5>"
    assert "Timestamp" not in resp.headers

    trying = make_response(req, 100)
    assert trying.headers.get("Timestamp") == "54" and trying.to.tag is None
    assert "Record-Route" not in make_response(req, 486).headers

    # an existing To tag is never replaced
    req.headers.set("To", "<sip:bob@example.com>;tag=existing")
    assert make_response(req, 200, to_tag="new").to.tag == "existing"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (100, "Trying"),
        (183, "Session Progress"),
        (202, "Accepted"),
        (401, "Unauthorized"),
        (407, "Proxy Authentication Required"),
        (415, "Unsupported Media Type"),
        (481, "Call/Transaction Does Not Exist"),
        (487, "Request Terminated"),
        (488, "Not Acceptable Here"),
        (501, "Not Implemented"),
        (503, "Service Unavailable"),
        (603, "Decline"),
        (499, "Client Error"),
    ],
)
def test_default_reason_phrases(status: int, reason: str) -> None:
    req = parse_message(minimal())
    assert isinstance(req, SipRequest)
    assert make_response(req, status).reason == reason


def test_make_response_serializes_body_with_length() -> None:
    req = parse_message(sipp_invite())
    assert isinstance(req, SipRequest)
    resp = make_response(
        req, 200, to_tag="t", body=SDP, extra=[("Content-Type", "application/sdp")]
    )
    again = parse_message(resp.to_bytes())
    assert isinstance(again, SipResponse)
    assert again.body == SDP
    assert again.headers.get("Content-Length") == str(len(SDP))


def test_to_bytes_fixes_a_stale_content_length() -> None:
    msg = parse_message(minimal(extra=b"Content-Length: 0\r\n"))
    msg.body = b"hello"
    out = msg.to_bytes()
    assert out.count(b"Content-Length") == 1 and b"Content-Length: 5\r\n" in out
    assert parse_message(out).body == b"hello"


def test_identifiers() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") for b in branches)
    assert len({new_tag() for _ in range(100)}) == 100
    cid = new_call_id("gw.example.com")
    assert cid.endswith("@gw.example.com") and len(cid.split("@")[0]) >= 16


# ---------------------------------------------------------------------------
# Stream framing


def test_stream_framer_handles_split_and_coalesced_messages_and_keepalives() -> None:
    one = sipp_invite()
    two = minimal(extra=b"Content-Length: 0\r\n")
    stream = b"\r\n\r\n" + one + b"\r\n" + two + one
    framer = StreamFramer()
    out = []
    for i in range(0, len(stream), 7):  # byte-dribbled
        out += framer.feed(stream[i : i + 7])
    assert [m.method for m in out if isinstance(m, SipRequest)] == ["INVITE", "OPTIONS", "INVITE"]
    assert out[0].body == SDP and out[2].body == SDP
    assert framer.keepalives >= 2
    framer2 = StreamFramer()
    assert len(framer2.feed(stream)) == 3


def test_stream_framer_requires_content_length() -> None:
    with pytest.raises(SipParseError, match="mandatory"):
        StreamFramer().feed(minimal())


def test_stream_framer_rejects_garbage_and_oversize() -> None:
    with pytest.raises(SipParseError, match="garbage"):
        StreamFramer().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(SipParseError, match="too large"):
        StreamFramer(max_header=100).feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 200)
    with pytest.raises(SipParseError, match="exceeds limit"):
        StreamFramer(max_body=10).feed(minimal(extra=b"Content-Length: 11\r\n"))
