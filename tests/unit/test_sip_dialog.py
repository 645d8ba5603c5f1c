"""Dialogs and route sets (RFC 3261 12): creation as UAS/UAC, loose and strict routing of our
in-dialog requests, the next hop, CSeq ordering, target refresh, Contact per transport."""

from __future__ import annotations

import pytest

from gateway.sip.dialog import Dialog, DialogError, contact_for
from gateway.sip.message import SipRequest, SipResponse, parse_message

INVITE = (
    "INVITE sip:10000@gw.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP proxy.example;branch=z9hG4bKp1\r\n"
    "Via: SIP/2.0/UDP caller.example:5070;branch=z9hG4bKc1\r\n"
    "Record-Route: <sip:p2.example;lr>\r\n"
    "Record-Route: <sip:p1.example;lr>\r\n"
    "From: <sip:555@caller.example>;tag=abc\r\n"
    "To: <sip:10000@gw.example>\r\n"
    "Call-ID: call-1\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:555@198.51.100.7:5070>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def req(text: str = INVITE) -> SipRequest:
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_uas_dialog_keeps_record_route_in_order_and_routes_bye_loosely() -> None:
    d = Dialog.as_uas(req(), "ourtag")
    assert d.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert d.remote_target == "sip:555@198.51.100.7:5070"
    assert d.local_tag == "ourtag" and d.remote_tag == "abc"
    bye = d.request("BYE", "SIP/2.0/UDP gw.example;branch=z9hG4bKx")
    assert bye.uri == "sip:555@198.51.100.7:5070", "loose routing: R-URI is the remote target"
    assert bye.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert bye.require("From") == "<sip:10000@gw.example>;tag=ourtag"
    assert bye.require("To") == "<sip:555@caller.example>;tag=abc"
    assert bye.cseq == (1, "BYE")
    assert d.next_hop() == ("p2.example", 5060, None)


def test_uac_dialog_reverses_record_route_and_ack_keeps_the_invite_cseq() -> None:
    invite = req(
        INVITE.replace("Record-Route: <sip:p2.example;lr>\r\n", "").replace(
            "Record-Route: <sip:p1.example;lr>\r\n", ""
        )
    )
    ok = parse_message(
        (
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n"
            "Record-Route: <sip:p2.example;lr>\r\n"
            "Record-Route: <sip:p1.example:5080;lr;transport=tcp>\r\n"
            "From: <sip:555@caller.example>;tag=abc\r\nTo: <sip:10000@gw.example>;tag=xyz\r\n"
            "Call-ID: call-1\r\nCSeq: 7 INVITE\r\nContact: <sip:agent@203.0.113.5:5062>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(ok, SipResponse)
    d = Dialog.as_uac(invite, ok)
    assert d.route_set == ["<sip:p1.example:5080;lr;transport=tcp>", "<sip:p2.example;lr>"]
    assert d.next_hop() == ("p1.example", 5080, "tcp")
    ack = d.request("ACK", "SIP/2.0/UDP gw;branch=z9hG4bKa", cseq=7)
    assert ack.cseq == (7, "ACK") and d.local_cseq == 7
    assert ack.uri == "sip:agent@203.0.113.5:5062"
    assert d.request("BYE", "SIP/2.0/UDP gw;branch=z9hG4bKb").cseq == (8, "BYE")


def test_strict_router_gets_the_request_uri_and_the_target_goes_last() -> None:
    d = Dialog(
        "c",
        "<sip:a@x>;tag=1",
        "<sip:b@y>;tag=2",
        "sip:b@203.0.113.9",
        ["<sip:strict.example>", "<sip:p2.example;lr>"],
    )
    bye = d.request("BYE", "SIP/2.0/UDP gw;branch=z9hG4bKs")
    assert bye.uri == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:b@203.0.113.9>"]


def test_no_route_set_goes_to_the_remote_target() -> None:
    d = Dialog("c", "<sip:a@x>;tag=1", "<sip:b@y>;tag=2", "sip:b@203.0.113.9:5099;transport=tcp")
    bye = d.request("BYE", "SIP/2.0/TCP gw;branch=z9hG4bKs")
    assert "Route" not in bye.headers
    assert d.next_hop() == ("203.0.113.9", 5099, "tcp")


def test_remote_cseq_must_not_go_down_and_ack_cancel_are_exempt() -> None:
    d = Dialog.as_uas(req(), "t")
    lower = req(INVITE.replace("CSeq: 7 INVITE", "CSeq: 6 BYE").replace("INVITE sip", "BYE sip", 1))
    assert not d.accept_remote_cseq(lower)
    ack = req(INVITE.replace("CSeq: 7 INVITE", "CSeq: 1 ACK").replace("INVITE sip", "ACK sip", 1))
    assert d.accept_remote_cseq(ack)
    higher = req(
        INVITE.replace("CSeq: 7 INVITE", "CSeq: 8 BYE").replace("INVITE sip", "BYE sip", 1)
    )
    assert d.accept_remote_cseq(higher) and d.remote_cseq == 8


def test_target_refresh_moves_the_remote_target() -> None:
    d = Dialog.as_uas(req(), "t")
    d.refresh_target(req(INVITE.replace("198.51.100.7:5070", "198.51.100.8:5090")))
    assert d.remote_target == "sip:555@198.51.100.8:5090"


def test_missing_contact_or_tag_cannot_make_a_dialog() -> None:
    with pytest.raises(DialogError, match="Contact"):
        Dialog.as_uas(req(INVITE.replace("Contact: <sip:555@198.51.100.7:5070>\r\n", "")), "t")
    ok = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n"
        b"To: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:b@y>\r\n\r\n"
    )
    assert isinstance(ok, SipResponse)
    with pytest.raises(DialogError, match="To tag"):
        Dialog.as_uac(req(), ok)


def test_contact_names_the_transport() -> None:
    assert (
        contact_for("hotline", "192.0.2.1", 5060, "TCP")
        == "<sip:hotline@192.0.2.1:5060;transport=tcp>"
    )
    assert contact_for("hotline", "192.0.2.1", 5060, "UDP") == "<sip:hotline@192.0.2.1:5060>"
    assert contact_for("hotline", "::1", 5060, "UDP") == "<sip:hotline@[::1]:5060>"
