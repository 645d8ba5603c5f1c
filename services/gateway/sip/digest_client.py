"""Answering a carrier's digest challenge (RFC 3261 22.2, RFC 2617/7616 MD5) as a UAC.

A 401 carries ``WWW-Authenticate``, a 407 ``Proxy-Authenticate``; the request is sent again
with ``Authorization`` / ``Proxy-Authorization`` computed from the password, a new branch
and the next CSeq (same Call-ID and From tag). :class:`DigestClient` keeps the last
challenge per realm so later requests can be authorized before being challenged (nonce
count incremented), and refuses to answer the same challenge twice: a second challenge
without ``stale=true`` means the credentials are wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .builders import new_branch
from .digest import DigestError, authorization, parse_auth_header
from .message import SipRequest, SipResponse
from .via import parse_via

__all__ = ["AuthFailed", "Credentials", "DigestClient", "with_new_branch"]

_CHALLENGES = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


class AuthFailed(DigestError):
    """The challenge cannot be answered (wrong credentials, unsupported algorithm/qop, no
    challenge header); the text says why."""


@dataclass(frozen=True)
class Credentials:
    """A username/password at a carrier; ``realm`` None answers any realm."""

    username: str
    password: str
    realm: str | None = None

    def __repr__(self) -> str:  # never the password in a log line
        return f"Credentials(username={self.username!r}, realm={self.realm!r})"


def with_new_branch(request: SipRequest, cseq: int | None = None) -> SipRequest:
    """A copy of ``request`` for a new transaction: fresh top Via branch, CSeq ``cseq``
    (default: one more)."""
    headers = request.headers.copy()
    via = parse_via(request.require("Via"))
    via.params["branch"] = new_branch()
    via.params.pop("received", None)
    if "rport" in via.params:
        via.params["rport"] = None
    headers.set_first("Via", str(via))
    number, method = request.cseq
    headers.set("CSeq", f"{number + 1 if cseq is None else cseq} {method}")
    return SipRequest(request.method, request.uri, headers, request.body)


@dataclass
class _Challenge:
    params: dict[str, str]
    header: str  # Authorization or Proxy-Authorization
    nc: int = 0


@dataclass
class DigestClient:
    """Digest answers for one set of credentials."""

    credentials: Credentials
    _challenges: dict[str, _Challenge] = field(default_factory=dict)  # realm -> last one

    def authorize(self, request: SipRequest, response: SipResponse) -> SipRequest:
        """The request to send after a 401/407 ``response`` to ``request`` (22.2)."""
        names = _CHALLENGES.get(response.status)
        if names is None:
            raise AuthFailed(f"{response.status} is not a challenge")
        challenge_header, answer_header = names
        values = response.headers.get_all(challenge_header)
        if not values:
            raise AuthFailed(f"{response.status} without {challenge_header}")
        params = self._pick(values, response.status)
        realm = params.get("realm", "")
        previous = self._challenges.get(realm)
        already = request.headers.get(answer_header)
        stale = params.get("stale", "").lower() == "true"
        if already is not None and not stale and previous is not None:
            raise AuthFailed(
                f"{response.status} again after answering realm {realm!r}: "
                "the username or password is wrong"
            )
        self._challenges[realm] = _Challenge(params, answer_header)
        retry = with_new_branch(request)
        retry.headers.remove(answer_header)
        self._answer(retry, realm)
        return retry

    def preauthorize(self, request: SipRequest) -> bool:
        """Add credentials from the last challenge (next nonce count); False if none."""
        if not self._challenges:
            return False
        realm = self.credentials.realm
        if realm is None or realm not in self._challenges:
            realm = next(iter(self._challenges))
        self._answer(request, realm)
        return True

    def forget(self) -> None:
        self._challenges.clear()

    def _pick(self, values: list[str], status: int) -> dict[str, str]:
        problems = []
        for value in values:
            try:
                params = parse_auth_header(value)
            except DigestError as exc:
                problems.append(str(exc))
                continue
            if params.get("algorithm", "MD5").upper() != "MD5":
                problems.append(f"algorithm {params['algorithm']} is not supported")
                continue
            want = self.credentials.realm
            if want is not None and params.get("realm") != want:
                problems.append(f"realm {params.get('realm')!r} is not {want!r}")
                continue
            if "nonce" not in params:
                problems.append("challenge without nonce")
                continue
            return params
        raise AuthFailed(f"cannot answer the {status} challenge: " + "; ".join(problems))

    def _answer(self, request: SipRequest, realm: str) -> None:
        challenge = self._challenges[realm]
        challenge.nc += 1
        p = challenge.params
        value = authorization(
            self.credentials.username,
            self.credentials.password,
            p.get("realm", ""),
            p["nonce"],
            request.method,
            request.uri,
            qop=p.get("qop"),
            nc=challenge.nc,
            opaque=p.get("opaque"),
        )
        request.headers.remove(challenge.header)
        request.headers.add(challenge.header, value)
