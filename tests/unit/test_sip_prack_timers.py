"""Reliable provisional responses (RFC 3262) and session timers (RFC 4028), on a clock
stepped by hand."""

from __future__ import annotations

import pytest

from gateway.sip.builders import make_response
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.reliable import (
    PrackError,
    ReliableProvisional,
    RseqTracker,
    needs_prack,
    parse_rack,
    rack_for,
)
from gateway.sip.session_timer import (
    IntervalTooSmall,
    SessionTimer,
    min_se_of,
    parse_session_expires,
    uac_from_response,
    uac_headers,
    uas_negotiate,
)
from gateway.sip.syntax import SipParseError


def invite(*extra: str, method: str = "INVITE") -> SipRequest:
    text = (
        f"{method} sip:10000@gw SIP/2.0\r\nVia: SIP/2.0/UDP c;branch=z9hG4bK1\r\n"
        f"From: <sip:1@c>;tag=1\r\nTo: <sip:10000@gw>\r\nCall-ID: x\r\nCSeq: 4 {method}\r\n"
        + "".join(e + "\r\n" for e in extra)
        + "\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_reliable_180_is_retransmitted_doubling_from_t1_until_prack() -> None:
    rel = ReliableProvisional(t1=0.5, first_rseq=41)
    ringing = rel.make_reliable(make_response(invite(), 180, to_tag="t"), now=0.0)
    assert ringing.headers.get("Require") == "100rel" and ringing.headers.get("RSeq") == "42"
    sends = []
    now = 0.0
    for _ in range(3):
        at = rel.get_timer()
        assert at is not None
        now = at
        if rel.handle_timer(now) is not None:
            sends.append(now)
    assert sends == [0.5, 1.5, 3.5]
    wrong = invite("RAck: 42 5 INVITE", method="PRACK")
    assert not rel.prack(wrong), "an RAck for another CSeq does not acknowledge it"
    assert rel.prack(invite("RAck: 42 4 INVITE", method="PRACK"))
    assert rel.get_timer() is None and rel.pending is None


def test_no_prack_within_64_t1_times_out() -> None:
    rel = ReliableProvisional(t1=0.5, first_rseq=1)
    rel.make_reliable(make_response(invite(), 183, to_tag="t"), now=10.0)
    while (at := rel.get_timer()) is not None:
        rel.handle_timer(at)
    assert rel.timed_out and at is None
    assert rel.retransmissions == 6  # at +0.5, 1.5, 3.5, 7.5, 15.5, 31.5; gives up at +32


def test_only_one_reliable_1xx_at_a_time_and_not_100() -> None:
    rel = ReliableProvisional()
    rel.make_reliable(make_response(invite(), 180, to_tag="t"), 0.0)
    with pytest.raises(RuntimeError, match="unacknowledged"):
        rel.make_reliable(make_response(invite(), 183, to_tag="t"), 0.0)
    with pytest.raises(ValueError, match="101-199"):
        ReliableProvisional().make_reliable(make_response(invite(), 100), 0.0)


def resp(status: int, *extra: str) -> SipResponse:
    text = (
        f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP c;branch=z9hG4bK1\r\nFrom: <sip:1@c>;tag=1\r\n"
        "To: <sip:10000@gw>;tag=2\r\nCall-ID: x\r\nCSeq: 4 INVITE\r\n"
        + "".join(e + "\r\n" for e in extra)
        + "\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipResponse)
    return msg


def test_uac_prack_rack_and_retransmissions() -> None:
    r = resp(183, "Require: 100rel", "RSeq: 9")
    assert needs_prack(r) and rack_for(r) == "9 4 INVITE"
    assert not needs_prack(resp(180)) and not needs_prack(resp(200, "Require: 100rel"))
    seen = RseqTracker()
    assert seen.is_new(r) and not seen.is_new(r)
    assert seen.is_new(resp(180, "Require: 100rel", "RSeq: 10"))
    with pytest.raises(PrackError, match="without RSeq"):
        rack_for(resp(180, "Require: 100rel"))
    with pytest.raises(PrackError, match="bad RAck"):
        parse_rack("1 INVITE")


def test_uas_session_timer_negotiation() -> None:
    timer, headers = uas_negotiate(invite("Supported: timer", "Session-Expires: 1800"))
    assert timer is not None and timer.interval == 1800 and not timer.we_refresh
    assert headers == [("Session-Expires", "1800;refresher=uac"), ("Require", "timer")]
    timer, headers = uas_negotiate(invite("Session-Expires: 600"))  # UAC lacks timer
    assert timer is not None and timer.we_refresh
    assert headers == [("Session-Expires", "600;refresher=uas")]
    timer, _ = uas_negotiate(invite("Supported: timer", "x: 300;refresher=uas"))
    assert timer is not None and timer.we_refresh and timer.interval == 300
    assert uas_negotiate(invite()) == (None, [])
    with pytest.raises(IntervalTooSmall) as small:
        uas_negotiate(invite("Session-Expires: 60"), min_se=90)
    assert small.value.min_se == 90
    with pytest.raises(SipParseError, match="refresher"):
        parse_session_expires("1800;refresher=me")


def test_session_timer_refreshes_at_half_and_expires_before_the_end() -> None:
    ours = SessionTimer(1800, we_refresh=True, refresher="uas")
    ours.start(100.0)
    assert ours.get_timer() == 1000.0 and ours.handle_timer(999.0) is None
    assert ours.handle_timer(1000.0) == "refresh" and ours.get_timer() is None
    ours.refreshed(1001.0)
    assert ours.get_timer() == 1901.0
    theirs = SessionTimer(90, we_refresh=False, refresher="uac")
    theirs.start(0.0)
    assert theirs.get_timer() == 60.0  # 90 - min(32, 30)
    theirs.refreshed(50.0)  # their refresh arrived in time
    assert theirs.get_timer() == 110.0 and theirs.handle_timer(110.0) == "expire"


def test_uac_side_session_timer() -> None:
    assert uac_headers(1800, 90) == [("Session-Expires", "1800"), ("Min-SE", "90")]
    timer = uac_from_response(resp(200, "Session-Expires: 1200;refresher=uac"))
    assert timer is not None and timer.we_refresh and timer.interval == 1200
    timer = uac_from_response(resp(200, "Session-Expires: 1200;refresher=uas"))
    assert timer is not None and not timer.we_refresh
    assert uac_from_response(resp(200)) is None
    assert min_se_of(resp(422, "Min-SE: 300")) == 300
    with pytest.raises(SipParseError, match="Min-SE"):
        min_se_of(resp(422))
