"""The gateway as a client of a carrier: digest answers (RFC 3261 22.2), the REGISTER client
(refresh, back-off, 423) and the OPTIONS keepalive, sans I/O on a clock stepped by hand.
The registrar side is our own Registrar, so the digest answers are checked by a verifier
we did not write for the client."""

from __future__ import annotations

import pytest

from gateway.sip import digest
from gateway.sip.builders import make_response
from gateway.sip.digest_client import AuthFailed, Credentials, DigestClient
from gateway.sip.keepalive import OptionsPinger
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.register_client import RegisterClient

REALM = "carrier.example"


def wire(msg: SipRequest | SipResponse) -> SipRequest | SipResponse:
    return parse_message(msg.to_bytes())


def challenge(req: SipRequest, status: int = 401, stale: bool = False) -> SipResponse:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    nonce = digest.NonceManager(b"k").issue()
    return make_response(
        req, status, to_tag="t", extra=[(header, digest.challenge(REALM, nonce, stale=stale))]
    )


def invite() -> SipRequest:
    msg = parse_message(
        b"INVITE sip:+861088@carrier.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP gw:5060;branch=z9hG4bKfirst;rport\r\n"
        b"From: <sip:hotline@carrier.example>;tag=f\r\nTo: <sip:+861088@carrier.example>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(msg, SipRequest)
    return msg


@pytest.mark.parametrize(
    ("status", "header"), [(401, "Authorization"), (407, "Proxy-Authorization")]
)
def test_challenge_is_answered_with_a_verifiable_response(status: int, header: str) -> None:
    client = DigestClient(Credentials("acct", "s3cret"))
    first = invite()
    retry = client.authorize(first, challenge(first, status))
    assert retry.cseq == (2, "INVITE") and retry.call_id == first.call_id
    assert retry.top_via.branch != first.top_via.branch
    assert retry.require("From") == first.require("From")
    params = digest.parse_auth_header(retry.require(header))
    assert params["username"] == "acct" and params["uri"] == retry.uri
    assert digest.verify(params, "INVITE", digest.ha1("acct", REALM, "s3cret"))
    assert not digest.verify(params, "INVITE", digest.ha1("acct", REALM, "wrong"))


def test_a_second_challenge_means_wrong_credentials_unless_stale() -> None:
    client = DigestClient(Credentials("acct", "bad"))
    retry = client.authorize(invite(), challenge(invite()))
    stale = client.authorize(retry, challenge(retry, stale=True))  # a new nonce: answer again
    with pytest.raises(AuthFailed, match="username or password is wrong"):
        client.authorize(stale, challenge(stale))


def test_unanswerable_challenges_say_why() -> None:
    client = DigestClient(Credentials("acct", "pw", realm="other"))
    with pytest.raises(AuthFailed, match="realm 'carrier.example' is not 'other'"):
        client.authorize(invite(), challenge(invite()))
    sha = make_response(
        invite(),
        401,
        extra=[("WWW-Authenticate", 'Digest realm="r", nonce="n", algorithm=SHA-256')],
    )
    with pytest.raises(AuthFailed, match="SHA-256 is not supported"):
        DigestClient(Credentials("a", "b")).authorize(invite(), sha)
    with pytest.raises(AuthFailed, match="without WWW-Authenticate"):
        DigestClient(Credentials("a", "b")).authorize(invite(), make_response(invite(), 401))


def registrar_answer(req: SipRequest, password: str, expires: str = "120") -> SipResponse:
    """A registrar that checks digest with the server-side code."""
    auth = req.headers.get("Authorization")
    if auth is None:
        return challenge(req)
    params = digest.parse_auth_header(auth)
    if not digest.verify(params, "REGISTER", digest.ha1("acct", REALM, password)):
        return challenge(req)
    contact = req.require("Contact")
    return make_response(req, 200, to_tag="r", extra=[("Contact", f"{contact};expires={expires}")])


def new_client(**kw: object) -> RegisterClient:
    args: dict[str, object] = {
        "registrar_uri": "sip:carrier.example",
        "aor": "sip:acct@carrier.example",
        "contact": "<sip:hotline@192.0.2.1:5060;transport=tcp>",
        "via_host": "192.0.2.1",
        "via_port": 5060,
        "transport_name": "tcp",
        "credentials": Credentials("acct", "s3cret"),
        "expires": 3600,
        "retry_min": 5.0,
        "retry_max": 40.0,
    }
    args.update(kw)
    return RegisterClient(**args)  # type: ignore[arg-type]


def test_registers_with_digest_and_refreshes_before_expiry() -> None:
    client = new_client()
    client.start(0.0)
    req = client.handle_timer(0.0)
    assert req is not None and req.headers.get("Authorization") is None
    assert req.require("Contact") == "<sip:hotline@192.0.2.1:5060;transport=tcp>"
    assert req.top_via.transport == "TCP" and req.require("Expires") == "3600"
    retry = client.receive_response(registrar_answer(req, "s3cret"), 0.1)
    assert retry is not None and retry.cseq[0] == req.cseq[0] + 1
    assert client.receive_response(registrar_answer(retry, "s3cret", "120"), 0.2) is None
    assert client.state.registered and client.state.expires_at == pytest.approx(120.2)
    assert client.get_timer() == pytest.approx(60.2), "refresh at half of a short expiry"
    refresh = client.handle_timer(60.2)
    assert refresh is not None and refresh.call_id == req.call_id
    assert refresh.headers.get("Authorization") is not None, "the refresh is pre-authorized"
    assert client.receive_response(registrar_answer(refresh, "s3cret", "3600"), 60.3) is None
    assert client.get_timer() == pytest.approx(60.3 + 3540), "long expiry: 60 s early"


def test_wrong_password_backs_off_doubling_and_honours_retry_after() -> None:
    client = new_client(credentials=Credentials("acct", "wrong"))
    client.start(0.0)
    now = 0.0
    delays = []
    for _ in range(5):
        at = client.get_timer()
        assert at is not None
        delays.append(round(at - now, 3))
        now = at
        req = client.handle_timer(now)
        assert req is not None
        while req is not None:
            req = client.receive_response(registrar_answer(req, "s3cret"), now)
        assert not client.state.registered
        assert "username or password is wrong" in client.state.reason
    assert delays == [0.0, 5.0, 10.0, 20.0, 40.0]
    req = client.handle_timer(client.get_timer() or 0.0)
    assert req is not None
    busy = make_response(req, 503, extra=[("Retry-After", "120")])
    now = client.get_timer() or 0.0
    client.receive_response(busy, 1000.0)
    assert client.get_timer() == 1120.0 and client.state.reason == "503 Service Unavailable"


def test_interval_too_brief_retries_with_min_expires() -> None:
    client = new_client(expires=60, credentials=None)
    client.start(0.0)
    req = client.handle_timer(0.0)
    assert req is not None
    again = client.receive_response(make_response(req, 423, extra=[("Min-Expires", "300")]), 0.0)
    assert again is not None and again.require("Expires") == "300"


def test_unregister_sends_expires_zero() -> None:
    client = new_client(credentials=None)
    bye = client.unregister()
    assert bye.require("Expires") == "0" and not client.state.registered


def test_options_keepalive_marks_down_after_misses_and_up_on_any_answer() -> None:
    pinger = OptionsPinger(
        target_uri="sip:carrier.example",
        from_uri="sip:hotline@192.0.2.1",
        via_host="192.0.2.1",
        via_port=5060,
        transport_name="udp",
        interval=30,
        down_after=2,
    )
    pinger.start(0.0)
    req = pinger.handle_timer(0.0)
    assert req is not None and req.method == "OPTIONS" and pinger.get_timer() is None
    assert pinger.receive_response(make_response(req, 200), 0.1) is True
    assert pinger.get_timer() == pytest.approx(30.1)
    req = pinger.handle_timer(30.1)
    assert req is not None
    assert pinger.receive_response(make_response(req, 408), 62.1, synthesized=True) is None
    req = pinger.handle_timer(92.1)
    assert req is not None
    assert pinger.receive_response(make_response(req, 408), 124.1, synthesized=True) is False
    assert "no answer" in pinger.reason
    req = pinger.handle_timer(154.1)
    assert req is not None
    assert pinger.receive_response(make_response(req, 405), 154.2) is True, "405 is alive"
