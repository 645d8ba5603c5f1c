"""Tests for gateway.sip.digest against RFC 2617 vectors and replay/expiry rules."""

from __future__ import annotations

import hashlib

import pytest

from gateway.sip.digest import (
    DigestError,
    NonceManager,
    authorization,
    challenge,
    ha1,
    parse_auth_header,
    verify,
)
from gateway.sip.syntax import SipParseError

# RFC 2617 section 3.5 example.
USER, PASSWORD, REALM = "Mufasa", "Circle Of Life", "testrealm@host.com"
NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
OPAQUE = "5ccc069c403ebaf9f0171e9517f40e41"
RFC_HEADER = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
    'qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ha1_is_md5_of_user_realm_password() -> None:
    assert (
        ha1(USER, REALM, PASSWORD)
        == hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    )


def test_rfc2617_example_response() -> None:
    header = authorization(
        USER,
        PASSWORD,
        REALM,
        NONCE,
        "GET",
        "/dir/index.html",
        qop="auth",
        nc=1,
        cnonce="0a4f113b",
        opaque=OPAQUE,
    )
    params = parse_auth_header(header)
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["nc"] == "00000001" and params["qop"] == "auth" and params["opaque"] == OPAQUE


def test_verify_rfc2617_header_text() -> None:
    params = parse_auth_header(RFC_HEADER)
    stored = ha1(USER, REALM, PASSWORD)
    assert verify(params, "GET", stored)
    assert verify(params, "GET", stored.upper())  # hex case does not matter
    assert not verify(params, "POST", stored)
    assert not verify(params, "GET", ha1(USER, REALM, "wrong"))
    assert not verify({**params, "nc": "00000002"}, "GET", stored)
    assert not verify({**params, "qop": "auth-int"}, "GET", stored)
    assert not verify({**params, "algorithm": "SHA-256"}, "GET", stored)
    assert not verify({k: v for k, v in params.items() if k != "cnonce"}, "GET", stored)
    assert not verify({k: v for k, v in params.items() if k != "response"}, "GET", stored)


def test_legacy_no_qop_round_trip() -> None:
    header = authorization(
        "1001", "s3cret", "hotline", "abc", "REGISTER", "sip:hotline.example.com"
    )
    params = parse_auth_header(header)
    assert "qop" not in params and "nc" not in params
    ha2 = hashlib.md5(b"REGISTER:sip:hotline.example.com").hexdigest()
    expected = hashlib.md5(f"{ha1('1001', 'hotline', 's3cret')}:abc:{ha2}".encode()).hexdigest()
    assert params["response"] == expected
    # a server that offered qop=auth refuses it (no nonce count: replayable) unless told
    assert not verify(params, "REGISTER", ha1("1001", "hotline", "s3cret"))
    assert verify(params, "REGISTER", ha1("1001", "hotline", "s3cret"), require_qop=False)


def test_client_picks_auth_from_offered_qop_list() -> None:
    params = parse_auth_header(
        authorization("u", "p", "r", "n", "INVITE", "sip:x", qop="auth-int, auth", nc=3)
    )
    assert params["qop"] == "auth" and params["nc"] == "00000003" and len(params["cnonce"]) >= 8
    assert verify(params, "INVITE", ha1("u", "r", "p"))
    with pytest.raises(DigestError):
        authorization("u", "p", "r", "n", "INVITE", "sip:x", qop="auth-int")
    with pytest.raises(DigestError):
        authorization("u", "p", "r", "n", "INVITE", "sip:x", algorithm="SHA-256")


def test_challenge_format_parses_back() -> None:
    value = challenge("hotline", "n1", stale=True, opaque="op")
    assert value.startswith('Digest realm="hotline", nonce="n1"')
    assert "algorithm=MD5" in value and 'qop="auth"' in value
    assert parse_auth_header(value) == {
        "realm": "hotline",
        "nonce": "n1",
        "opaque": "op",
        "algorithm": "MD5",
        "qop": "auth",
        "stale": "true",
    }
    assert "stale" not in challenge("hotline", "n1")


def test_parse_auth_header_quoting() -> None:
    params = parse_auth_header(
        'digest  Username="a\\"b", realm="x,y" ,uri="sip:a@b;x=1", nc=00000001'
    )
    assert params == {"username": 'a"b', "realm": "x,y", "uri": "sip:a@b;x=1", "nc": "00000001"}


@pytest.mark.parametrize(
    "value",
    [
        "Basic dXNlcjpwYXNz",
        "Digest",
        'Digest username="unterminated',
        "Digest username",
        'Digest realm="a" junk, nonce="b"',
        "Digest a=1, a=2",
        "Digest =x",
    ],
)
def test_parse_auth_header_rejects_garbage(value: str) -> None:
    with pytest.raises(DigestError):
        parse_auth_header(value)
    assert issubclass(DigestError, SipParseError) and issubclass(DigestError, ValueError)


def test_nonce_lifecycle() -> None:
    clock = FakeClock()
    mgr = NonceManager(b"k" * 32, ttl=300, clock=clock)
    nonce = mgr.issue()
    assert nonce != mgr.issue()
    assert mgr.check(nonce) == "ok"
    clock.now += 299
    assert mgr.check(nonce) == "ok"
    clock.now += 2
    assert mgr.check(nonce) == "stale"
    assert mgr.check("garbage") == "invalid"
    ts, rand, mac = nonce.split(".")
    assert mgr.check(f"{ts}.{rand}.{'0' * len(mac)}") == "invalid"
    assert mgr.check(f"{int(ts, 16) + 1:x}.{rand}.{mac}") == "invalid"  # timestamp tampering
    other = NonceManager(b"other-secret", clock=clock)
    assert other.check(mgr.issue()) == "invalid"
    clock.now -= 1000  # nonce from the future (beyond skew)
    assert mgr.check(mgr.issue()) == "ok"
    future = mgr.issue()
    clock.now -= 60
    assert mgr.check(future) == "invalid"


def test_nonce_count_replay_rejected() -> None:
    clock = FakeClock()
    mgr = NonceManager(b"secret", clock=clock)
    nonce = mgr.issue()
    assert mgr.check(nonce, "00000001") == "ok"
    assert mgr.commit_nc(nonce, "00000001")
    assert mgr.check(nonce, "00000001") == "invalid"  # replay
    assert not mgr.commit_nc(nonce, "00000001")
    assert mgr.check(nonce, "00000002") == "ok"
    assert mgr.commit_nc(nonce, 2)
    assert mgr.check(nonce, "00000001") == "invalid"  # going backwards
    assert mgr.check(nonce, "zzzzzzzz") == "invalid"
    assert mgr.check(nonce, "0") == "invalid"


def test_nonce_tracking_is_bounded_and_eviction_fails_safe() -> None:
    clock = FakeClock()
    mgr = NonceManager(b"secret", ttl=300, max_tracked=50, clock=clock)
    first = mgr.issue()
    assert mgr.commit_nc(first, 1)
    clock.now += 0.01
    for _ in range(200):
        n = mgr.issue()
        assert mgr.commit_nc(n, 1)
        clock.now += 0.01
    assert len(mgr) <= 50
    # The evicted nonce cannot be replayed: we no longer know its count, so it is stale.
    assert mgr.check(first, "00000001") == "stale"
    assert not mgr.commit_nc(first, 1)
    # Expired entries are dropped as time moves on.
    clock.now += 301
    assert mgr.commit_nc(mgr.issue(), 1)
    assert len(mgr) == 1


def test_end_to_end_challenge_response() -> None:
    mgr = NonceManager(b"gateway-secret")
    stored = ha1("agent7", "hotline", "pa55")
    chal = parse_auth_header(challenge("hotline", mgr.issue()))
    creds = parse_auth_header(
        authorization(
            "agent7",
            "pa55",
            chal["realm"],
            chal["nonce"],
            "REGISTER",
            "sip:hotline",
            qop=chal["qop"],
        )
    )
    assert mgr.check(creds["nonce"], creds["nc"]) == "ok"
    assert verify(creds, "REGISTER", stored)
    assert mgr.commit_nc(creds["nonce"], creds["nc"])
    assert mgr.check(creds["nonce"], creds["nc"]) == "invalid"


def test_empty_secret_rejected() -> None:
    with pytest.raises(ValueError):
        NonceManager(b"")
