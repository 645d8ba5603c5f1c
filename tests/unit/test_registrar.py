"""The registrar with real REGISTER messages and real digest answers (RFC 3261 section 10,
RFC 2617): challenge, bind, refuse, replay, unbind, limits, NAT."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from gateway.sip import digest
from gateway.sip.builders import new_branch, new_call_id, new_tag
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.ratelimit import FailureLockout
from gateway.sip.registrar import MAX_EXPIRES, MIN_EXPIRES, Binding, Registrar

REALM = "hotline.test"
PASSWORDS = {"8001": "s3cret-8001", "8002": "s3cret-8002"}
PHONE = ("192.0.2.10", 5062)


@dataclass
class FakeTransport:
    name: str = "UDP"
    reliable: bool = False
    local_addr: tuple[str, int] = ("127.0.0.1", 5060)
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


UDP = FakeTransport()


def registrar(**kw) -> Registrar:  # noqa: ANN003
    directory = {ext: digest.ha1(ext, REALM, pw) for ext, pw in PASSWORDS.items()}
    return Registrar(directory, REALM, **kw)


class Phone:
    """A SIP phone registering one extension: builds REGISTERs and answers challenges."""

    def __init__(
        self,
        extension: str,
        password: str,
        source: tuple[str, int] = PHONE,
        contact_host: str | None = None,
    ) -> None:
        self.extension, self.password, self.source = extension, password, source
        self.contact = f"<sip:{extension}@{contact_host or source[0]}:{source[1]}>"
        self.call_id, self.tag, self.cseq = new_call_id(source[0]), new_tag(), 0
        self.nonce: str | None = None
        self.nc = 0

    def request(
        self,
        authorization: str | None = None,
        contact: str | None = "default",
        expires: int | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> SipRequest:
        self.cseq += 1
        items = [
            ("Via", f"SIP/2.0/UDP {self.source[0]}:{self.source[1]};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.extension}@{REALM}>;tag={self.tag}"),
            ("To", f"<sip:{self.extension}@{REALM}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
        ]
        if contact is not None:
            items.append(("Contact", self.contact if contact == "default" else contact))
        if expires is not None:
            items.append(("Expires", str(expires)))
        if authorization is not None:
            items.append(("Authorization", authorization))
        items += extra or []
        req = SipRequest("REGISTER", f"sip:{REALM}", Headers(items))
        wire = parse_message(req.to_bytes())  # what the registrar would really get
        assert isinstance(wire, SipRequest)
        return wire

    def answer(
        self,
        challenge: SipResponse,
        nc: int | None = None,
        password: str | None = None,
        user: str | None = None,
    ) -> str:
        params = digest.parse_auth_header(challenge.headers.get("WWW-Authenticate"))
        self.nonce = params["nonce"]
        self.nc = nc if nc is not None else 1
        return self.authorize(password=password, user=user)

    def authorize(self, password: str | None = None, user: str | None = None) -> str:
        assert self.nonce is not None
        return digest.authorization(
            user or self.extension,
            password or self.password,
            REALM,
            self.nonce,
            "REGISTER",
            f"sip:{REALM}",
            qop="auth",
            nc=self.nc,
        )

    def register(self, reg: Registrar, **kw) -> SipResponse:  # noqa: ANN003
        """Full exchange: REGISTER, 401, REGISTER with credentials; returns the last answer."""
        challenge = reg.handle(self.request(**kw), self.source, UDP)
        assert challenge.status == 401
        return reg.handle(self.request(self.answer(challenge), **kw), self.source, UDP)


def expect(resp: SipResponse, status: int) -> SipResponse:
    assert resp.status == status, f"{resp.status} {resp.reason}"
    return resp


# ---- authentication ---------------------------------------------------------------------
def test_register_without_credentials_is_challenged() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    req = phone.request()
    resp = expect(reg.handle(req, PHONE, UDP), 401)
    challenge = digest.parse_auth_header(resp.headers.get("WWW-Authenticate"))
    assert challenge["realm"] == REALM and challenge["qop"] == "auth"
    assert challenge["algorithm"] == "MD5" and challenge["nonce"]
    assert "stale" not in challenge
    # the response matches the request
    assert resp.call_id == req.call_id and resp.cseq == (1, "REGISTER")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert reg.lookup("8001") is None


def test_right_password_binds() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    before = time.monotonic()
    resp = expect(phone.register(reg, expires=600), 200)
    binding = reg.lookup("8001")
    assert binding is not None
    assert str(binding.uri) == f"sip:8001@{PHONE[0]}:{PHONE[1]}"
    assert binding.extension == "8001" and binding.source == PHONE and binding.transport is UDP
    assert before + 600 <= binding.expires_at <= time.monotonic() + 600
    assert resp.headers.get("Expires") == "600"
    assert resp.headers.get("Contact") == f"<sip:8001@{PHONE[0]}:{PHONE[1]}>;expires=600"


def test_expires_from_the_contact_parameter_and_defaults() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    resp = expect(phone.register(reg, contact=f"{phone.contact};expires=120", expires=900), 200)
    assert resp.headers.get("Expires") == "120"  # the Contact's own expires wins
    assert "expires" not in reg.lookup("8001").contact.params
    resp = expect(phone.register(reg), 200)
    assert resp.headers.get("Expires") == "3600"  # no expiry asked: the default


def test_long_expires_is_capped() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    resp = expect(phone.register(reg, expires=86400), 200)
    assert resp.headers.get("Expires") == str(MAX_EXPIRES)
    assert reg.lookup("8001").expires_at <= time.monotonic() + MAX_EXPIRES


def test_wrong_password_is_challenged_again_and_not_bound() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    challenge = expect(reg.handle(phone.request(), PHONE, UDP), 401)
    resp = reg.handle(phone.request(phone.answer(challenge, password="guess")), PHONE, UDP)
    expect(resp, 401)
    assert "WWW-Authenticate" in resp.headers
    assert reg.lookup("8001") is None


def test_another_extensions_password_does_not_work() -> None:
    reg = registrar()
    wrong = Phone("8001", PASSWORDS["8002"])  # 8002's valid password used for 8001
    challenge = reg.handle(wrong.request(), PHONE, UDP)
    expect(reg.handle(wrong.request(wrong.answer(challenge)), PHONE, UDP), 401)
    # and credentials of 8002 in a REGISTER for 8001's AOR
    phone = Phone("8001", PASSWORDS["8001"])
    challenge = reg.handle(phone.request(), PHONE, UDP)
    auth = phone.answer(challenge, user="8002", password=PASSWORDS["8002"])
    expect(reg.handle(phone.request(auth), PHONE, UDP), 401)
    assert reg.lookup("8001") is None and reg.lookup("8002") is None


def test_unknown_extension_is_refused() -> None:
    reg, phone = registrar(), Phone("9999", "whatever")
    challenge = expect(reg.handle(phone.request(), PHONE, UDP), 401)
    expect(reg.handle(phone.request(phone.answer(challenge)), PHONE, UDP), 401)
    assert reg.lookup("9999") is None and reg.bindings == {}


def test_forged_nonce_is_refused() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    phone.nonce, phone.nc = "1234.abcd.notours", 1
    expect(reg.handle(phone.request(phone.authorize()), PHONE, UDP), 401)
    assert reg.lookup("8001") is None


def test_stale_nonce_is_rechallenged_with_stale_flag() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    clock = [1_000_000.0]
    reg.nonces = digest.NonceManager(b"k" * 32, ttl=300, clock=lambda: clock[0])
    challenge = reg.handle(phone.request(), PHONE, UDP)
    auth = phone.answer(challenge)
    clock[0] += 301
    resp = expect(reg.handle(phone.request(auth), PHONE, UDP), 401)
    assert digest.parse_auth_header(resp.headers.get("WWW-Authenticate")).get("stale") == "true"
    assert reg.lookup("8001") is None


def test_replayed_nonce_count_is_refused() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    challenge = reg.handle(phone.request(), PHONE, UDP)
    auth = phone.answer(challenge)
    expect(reg.handle(phone.request(auth), PHONE, UDP), 200)
    # an eavesdropper replays the same credentials to point the extension at itself
    attacker = Phone("8001", "unknown", source=("203.0.113.66", 5060))
    expect(reg.handle(attacker.request(auth), attacker.source, UDP), 401)
    binding = reg.lookup("8001")
    assert binding is not None and binding.source == PHONE
    # the phone itself moves on with the next nonce count on the same nonce
    phone.nc = 2
    expect(reg.handle(phone.request(phone.authorize()), PHONE, UDP), 200)
    phone.nc = 2
    expect(reg.handle(phone.request(phone.authorize()), PHONE, UDP), 401)


def test_malformed_authorization_is_a_400() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    expect(reg.handle(phone.request("Basic ODAwMTpwdw=="), PHONE, UDP), 400)


# ---- binding and unbinding --------------------------------------------------------------
def test_expires_zero_unbinds() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    expect(phone.register(reg), 200)
    assert reg.lookup("8001") is not None
    expect(phone.register(reg, expires=0), 200)
    assert reg.lookup("8001") is None


def test_contact_expires_zero_unbinds() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    expect(phone.register(reg), 200)
    expect(phone.register(reg, contact=f"{phone.contact};expires=0"), 200)
    assert reg.lookup("8001") is None


def test_contact_star_with_expires_zero_removes_all() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    expect(phone.register(reg), 200)
    expect(phone.register(reg, contact="*", expires=0), 200)
    assert reg.lookup("8001") is None


@pytest.mark.parametrize("expires", [None, 60])
def test_contact_star_needs_expires_zero(expires: int | None) -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    expect(phone.register(reg), 200)
    resp = expect(phone.register(reg, contact="*", expires=expires), 400)
    assert "Expires: 0" in resp.reason
    assert reg.lookup("8001") is not None


def test_query_without_contact_lists_the_binding() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    empty = expect(phone.register(reg, contact=None), 200)
    assert "Contact" not in empty.headers
    expect(phone.register(reg, expires=600), 200)
    resp = expect(phone.register(reg, contact=None), 200)
    contact = resp.headers.get("Contact")
    assert contact.startswith(f"<sip:8001@{PHONE[0]}:{PHONE[1]}>;expires=")
    assert 590 <= int(contact.rsplit("=", 1)[1]) <= 600
    assert reg.lookup("8001") is not None


def test_too_brief_expires_is_423_with_min_expires() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    resp = expect(phone.register(reg, expires=MIN_EXPIRES - 1), 423)
    assert resp.headers.get("Min-Expires") == str(MIN_EXPIRES)
    assert reg.lookup("8001") is None
    expect(phone.register(reg, expires=MIN_EXPIRES), 200)


def test_bad_expires_is_400() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    challenge = reg.handle(phone.request(), PHONE, UDP)
    expect(
        reg.handle(phone.request(phone.answer(challenge), extra=[("Expires", "soon")]), PHONE, UDP),
        400,
    )


def test_re_register_replaces_the_binding() -> None:
    reg = registrar()
    phone = Phone("8001", PASSWORDS["8001"])
    expect(phone.register(reg), 200)
    moved = Phone("8001", PASSWORDS["8001"], source=("192.0.2.77", 5070))
    expect(moved.register(reg), 200)
    assert reg.lookup("8001").source == ("192.0.2.77", 5070)
    assert len(reg.bindings) == 1


def test_expired_binding_is_not_returned() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    expect(phone.register(reg), 200)
    reg.bindings["8001"].expires_at = time.monotonic() - 0.001
    assert reg.lookup("8001") is None
    assert "8001" not in reg.bindings


# ---- abuse ------------------------------------------------------------------------------
def test_flood_from_one_source_gets_503() -> None:
    reg, phone = registrar(rate=0.01, burst=3), Phone("8001", PASSWORDS["8001"])
    answers = [reg.handle(phone.request(), PHONE, UDP) for _ in range(5)]
    assert [r.status for r in answers] == [401, 401, 401, 503, 503]
    assert answers[-1].headers.get("Retry-After") == "5"
    assert "WWW-Authenticate" not in answers[-1].headers
    other = Phone("8002", PASSWORDS["8002"], source=("192.0.2.20", 5060))
    expect(reg.handle(other.request(), other.source, UDP), 401)  # others are not affected


def test_repeated_failures_lock_the_source_out() -> None:
    reg = registrar(lockout=FailureLockout(limit=3, window_s=60, lock_s=300))
    phone = Phone("8001", PASSWORDS["8001"])
    for _ in range(3):
        challenge = reg.handle(phone.request(), PHONE, UDP)
        expect(
            reg.handle(phone.request(phone.answer(challenge, password="guess")), PHONE, UDP), 401
        )
    # now even the right password is refused from that address, before any digest work
    resp = reg.handle(phone.request(), PHONE, UDP)
    expect(resp, 403)
    assert "WWW-Authenticate" not in resp.headers
    phone.nc += 1
    expect(reg.handle(phone.request(phone.authorize()), PHONE, UDP), 403)
    assert reg.lookup("8001") is None
    other = Phone("8001", PASSWORDS["8001"], source=("192.0.2.99", 5060))
    expect(other.register(reg), 200)


def test_success_resets_the_failure_count() -> None:
    reg = registrar(lockout=FailureLockout(limit=3, window_s=60, lock_s=300), extension_burst=99)
    phone = Phone("8001", PASSWORDS["8001"])

    def fail() -> None:
        challenge = reg.handle(phone.request(), PHONE, UDP)
        expect(reg.handle(phone.request(phone.answer(challenge, password="x")), PHONE, UDP), 401)

    fail()
    fail()
    expect(phone.register(reg), 200)
    fail()
    fail()
    expect(phone.register(reg), 200)


# ---- where to send requests to the phone -------------------------------------------------
def test_target_is_the_contact_when_not_behind_nat() -> None:
    reg = registrar()
    phone = Phone("8001", PASSWORDS["8001"], source=("192.0.2.10", 40000))
    phone.contact = "<sip:8001@192.0.2.10:5062;transport=udp>"
    expect(phone.register(reg), 200)
    assert reg.lookup("8001").target == ("192.0.2.10", 5062)


def test_target_without_contact_port_is_5060() -> None:
    reg = registrar()
    phone = Phone("8001", PASSWORDS["8001"], source=("192.0.2.10", 40000))
    phone.contact = "<sip:8001@192.0.2.10>"
    expect(phone.register(reg), 200)
    assert reg.lookup("8001").target == ("192.0.2.10", 5060)


def test_target_is_the_source_behind_nat() -> None:
    reg = registrar()
    # the phone thinks it is 10.1.2.3:5060; the REGISTER arrived from the NAT's public address
    phone = Phone(
        "8001", PASSWORDS["8001"], source=("198.51.100.4", 61234), contact_host="10.1.2.3"
    )
    phone.contact = "<sip:8001@10.1.2.3:5060>"
    expect(phone.register(reg), 200)
    binding = reg.lookup("8001")
    assert binding.uri.host == "10.1.2.3"
    assert binding.target == ("198.51.100.4", 61234)


def test_binding_target_directly() -> None:
    from gateway.sip.uri import parse_name_addr

    same = Binding(
        "8001", parse_name_addr("<sip:8001@192.0.2.5:5080>"), ("192.0.2.5", 9999), UDP, 0.0
    )
    natted = Binding(
        "8001", parse_name_addr("<sip:8001@10.0.0.5:5080>"), ("192.0.2.5", 9999), UDP, 0.0
    )
    assert same.target == ("192.0.2.5", 5080)
    assert natted.target == ("192.0.2.5", 9999)


# ---- the digest probes of issue 11 -------------------------------------------------------
def rfc2069(phone: Phone, nonce: str) -> str:
    """An answer without qop (RFC 2069 style): no nonce count, no cnonce."""
    return digest.authorization(
        phone.extension, phone.password, REALM, nonce, "REGISTER", f"sip:{REALM}"
    )


def nonce_of(resp: SipResponse) -> str:
    return digest.parse_auth_header(resp.headers.get("WWW-Authenticate"))["nonce"]


def test_an_answer_without_qop_is_refused_even_with_the_right_password() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    challenge = expect(reg.handle(phone.request(), PHONE, UDP), 401)
    resp = reg.handle(phone.request(rfc2069(phone, nonce_of(challenge))), PHONE, UDP)
    assert (resp.status, resp.reason) == (401, "qop=auth Required")
    assert "WWW-Authenticate" in resp.headers
    assert reg.lookup("8001") is None


def test_captured_credentials_replayed_from_another_address_do_not_move_the_binding() -> None:
    """The issue's probe: a REGISTER captured on the wire, replayed from another address with
    a new Contact and Expires: 3600 - as sent (same nc) and as RFC 2069 (no nc)."""
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    challenge = reg.handle(phone.request(), PHONE, UDP)
    auth = phone.answer(challenge)
    expect(reg.handle(phone.request(auth), PHONE, UDP), 200)
    attacker = Phone("8001", "unknown", source=("203.0.113.66", 5060))
    for stolen in (auth, rfc2069(phone, nonce_of(challenge))):
        resp = reg.handle(attacker.request(stolen, expires=3600), attacker.source, UDP)
        expect(resp, 401)
    binding = reg.lookup("8001")
    assert binding is not None and binding.source == PHONE


def test_a_nonce_answered_from_another_address_is_refused() -> None:
    """Even an answer the phone never got to send (nc 1, lost on the way) is useless from
    another address: the nonce is bound to the address it was issued to."""
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    auth = phone.answer(reg.handle(phone.request(), PHONE, UDP))  # never reaches us
    attacker = Phone("8001", "unknown", source=("203.0.113.66", 5060))
    expect(reg.handle(attacker.request(auth), attacker.source, UDP), 401)
    assert reg.lookup("8001") is None
    expect(reg.handle(phone.request(auth), PHONE, UDP), 200)  # the phone itself still can


def test_a_digest_uri_that_is_not_the_request_uri_is_a_400() -> None:
    reg, phone = registrar(), Phone("8001", PASSWORDS["8001"])
    challenge = reg.handle(phone.request(), PHONE, UDP)
    phone.answer(challenge)
    auth = digest.authorization(
        "8001",
        PASSWORDS["8001"],
        REALM,
        phone.nonce or "",
        "REGISTER",
        "sip:elsewhere.example",
        qop="auth",
        nc=1,
    )
    resp = reg.handle(phone.request(auth), PHONE, UDP)
    assert (resp.status, resp.reason) == (400, "Digest uri Does Not Match Request-URI")
    assert reg.lookup("8001") is None


def test_an_equivalent_digest_uri_is_accepted() -> None:
    assert digest.uri_matches("sip:HOTLINE.test", "sip:hotline.test")
    assert digest.uri_matches("sip:hotline.test:5060", "sip:hotline.test:5060;transport=udp")
    assert not digest.uri_matches("sip:hotline.test:5070", "sip:hotline.test")
    assert not digest.uri_matches("sip:8002@hotline.test", "sip:8001@hotline.test")
    assert not digest.uri_matches("", "sip:hotline.test")


def guess(reg: Registrar, extension: str, source: tuple[str, int]) -> SipResponse:
    """One wrong-password attempt at `extension` from `source`: the final answer."""
    guesser = Phone(extension, "guess", source=source)
    first = reg.handle(guesser.request(), source, UDP)
    if first.status != 401:
        return first
    return reg.handle(guesser.request(guesser.answer(first)), source, UDP)


def test_guesses_at_one_extension_from_many_addresses_lock_the_extension() -> None:
    """The issue's probe: 20 addresses, 200 guesses at one extension in no time."""
    reg = registrar()
    phone = Phone("8001", PASSWORDS["8001"])
    expect(phone.register(reg), 200)  # the real phone, registered before the attack
    statuses = [guess(reg, "8001", (f"198.51.100.{i % 20 + 1}", 5060)).status for i in range(200)]
    digest_checked = statuses.count(401)
    assert digest_checked <= 10, "an extension takes at most 10 wrong answers per minute"
    assert statuses.count(403) + statuses.count(503) == 200 - digest_checked
    assert all(s in (401, 403, 503) for s in statuses)
    locked = guess(reg, "8001", ("198.51.100.77", 5060))  # a new address: still locked
    assert locked.status in (403, 503) and locked.headers.get("Retry-After")
    # the registered phone, at its own address, goes on refreshing its registration
    reg.extension_bucket = type(reg.extension_bucket)(100, 100)  # past the rate limit
    expect(phone.register(reg), 200)


def test_a_guessing_phone_does_not_lock_out_its_neighbours_behind_the_same_nat() -> None:
    reg = registrar(extension_burst=99)
    nat = ("192.0.2.50", 5060)
    for _ in range(5):
        guess(reg, "8001", nat)
    assert guess(reg, "8001", nat).status == 403  # that phone (pair) is locked ...
    neighbour = Phone("8002", PASSWORDS["8002"], source=("192.0.2.50", 5062))
    expect(neighbour.register(reg), 200)  # ... its neighbour is not


def test_an_address_guessing_at_many_extensions_is_locked_but_its_registered_phones_are_not() -> (
    None
):
    directory = {f"{7000 + i}": digest.ha1(f"{7000 + i}", REALM, "pw") for i in range(40)}
    directory["8002"] = digest.ha1("8002", REALM, PASSWORDS["8002"])
    reg = Registrar(directory, REALM, rate=1000, burst=1000)  # past the request rate limit
    nat = ("192.0.2.60", 5060)
    neighbour = Phone("8002", PASSWORDS["8002"], source=("192.0.2.60", 5062))
    expect(neighbour.register(reg), 200)
    statuses = [guess(reg, f"{7000 + i}", nat).status for i in range(40)]
    assert statuses[:30] == [401] * 30 and set(statuses[30:]) == {403}
    expect(neighbour.register(reg), 200)  # already registered from there: not locked


def test_locks_back_off_and_say_when_to_retry() -> None:
    reg = registrar(extension_burst=999)
    source = ("192.0.2.70", 5060)
    for _ in range(5):
        guess(reg, "8001", source)
    first = guess(reg, "8001", source)
    assert first.status == 403 and int(first.headers.get("Retry-After") or 0) == 60
    assert reg.lockout.retry_after("192.0.2.70|8001") == pytest.approx(60, abs=1)


def test_register_flood_for_one_extension_is_rate_limited_per_extension() -> None:
    reg = registrar()
    statuses = [
        reg.handle(
            Phone("8001", "x", source=(f"198.51.100.{i}", 5060)).request(),
            (f"198.51.100.{i}", 5060),
            UDP,
        ).status
        for i in range(1, 31)
    ]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {503}
    other = Phone("8002", PASSWORDS["8002"])
    expect(other.register(reg), 200)  # another extension is not affected
