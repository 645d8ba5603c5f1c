"""Web sessions and access control for the REST API, the websocket and the desktop.

A login returns a random token (also set as an HttpOnly, SameSite=Strict cookie for the
browser); the database keeps only its SHA-256, so a leaked table opens no sessions. Every
route's allowed roles come from `crm.roles.POLICY`; the middleware refuses a route that has
no entry, so a new endpoint cannot ship unguarded by accident.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from datetime import timedelta

from aiohttp import web
from sqlalchemy import delete, select

from crm import audit
from crm.db import Database
from crm.metrics import LOGINS
from crm.models import Session, User, utcnow
from crm.passwords import hash_password, needs_rehash, verify_password
from crm.rest import ApiError, Handler, json_body, text_field
from crm.roles import PUBLIC, allowed
from crm.throttle import AddressLimiter, HashesBusy, HashGate, LoginThrottle

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
COOKIE = "hotline_session"
SESSION_TTL = timedelta(hours=12)
#: request key under which handlers find the authenticated `User`.
USER = web.RequestKey("user", User)
#: whether the request's session has its screen locked (crm.screen_lock).
LOCKED = web.RequestKey("locked", bool)
#: what a locked session may still do: see who it is, unlock, sign out.
WHILE_LOCKED = frozenset({("GET", "/api/me"), ("POST", "/api/unlock"), ("POST", "/api/logout")})
DB = web.AppKey("db", Database)
THROTTLE = web.AppKey("throttle", LoginThrottle)
ADDRESSES = web.AppKey("login_addresses", AddressLimiter)
HASHES = web.AppKey("hashes", HashGate)
#: proxies (an ingress) whose X-Forwarded-For names the client
PROXIES = web.AppKey("trusted_proxies", tuple)


def client_address(request: web.Request) -> str:
    """The client's address: the TCP peer, or - when the peer is a trusted proxy - the last
    address in X-Forwarded-For that is not one of the trusted proxies."""
    peer = request.remote or "unknown"
    proxies: tuple[IPNetwork, ...] = request.app.get(PROXIES, ())
    if not proxies or not _in(peer, proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, proxies):
            return hop
    return peer


def _in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def presented_token(request: web.Request) -> str | None:
    """Bearer header first, then the cookie; `?token=` only for the websocket, where
    browsers cannot set headers."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    if cookie := request.cookies.get(COOKIE):
        return cookie
    if request.path == "/ws":
        return request.query.get("token") or None
    return None


async def authenticate(request: web.Request) -> tuple[User, bool] | None:
    """The user behind the request's token and whether its screen is locked; None when the
    token is absent, unknown or expired."""
    token = presented_token(request)
    if not token:
        return None
    query = (
        select(User, Session.locked_at)
        .join(Session, Session.username == User.username)
        .where(Session.token_hash == token_hash(token), Session.expires > utcnow())
    )
    async with request.app[DB].sessions() as session:
        found = (await session.execute(query)).first()
    if found is None:
        return None
    return found[0], found[1] is not None


def current_user(request: web.Request) -> User:
    """The authenticated user (the middleware has already refused anonymous requests)."""
    return request[USER]


@web.middleware
async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a valid session, 403 when the role is not on the route's list."""
    match = request.match_info
    if match.http_exception is not None:
        return await handler(request)  # unknown path or method: let the router say 404/405
    resource = match.route.resource
    roles = allowed(request.method, resource.canonical if resource else "")
    if roles is None:
        raise ApiError(403, f"no access policy for {request.method} {request.path}")
    if roles == PUBLIC:
        return await handler(request)
    found = await authenticate(request)
    if found is None:
        raise ApiError(401, "authentication required: log in first")
    user, locked = found
    where = resource.canonical if resource is not None else request.path
    if user.role not in roles:
        raise ApiError(403, f"role {user.role} may not use {request.method} {where}")
    if locked and (request.method, where) not in WHILE_LOCKED:
        raise ApiError(423, "the desk is locked: unlock it with your password")
    request[USER] = user
    request[LOCKED] = locked
    return await handler(request)


async def login(request: web.Request) -> web.Response:
    """POST /api/login {"username", "password"} -> {"token", "user", "expires"}."""
    body = await json_body(request)
    username = text_field(body, "username", max_len=64)
    password = text_field(body, "password", max_len=1024)
    assert username is not None and password is not None
    address = client_address(request)
    db, throttle = request.app[DB], request.app[THROTTLE]

    wait = request.app[ADDRESSES].take(address)  # before any database or password work
    if wait:
        LOGINS.labels("rate_limited").inc()
        raise ApiError(
            429,
            f"too many login attempts from {address}; try again in {wait} s",
            {"Retry-After": str(wait)},
        )
    wait = throttle.retry_after(username, address)
    if wait:
        LOGINS.labels("rate_limited").inc()
        async with db.sessions() as session:
            audit.record(session, username, "login.throttled", username, f"from {address}")
            await session.commit()
        raise ApiError(
            429,
            f"too many failed logins for {username}; try again in {wait} s",
            {"Retry-After": str(wait)},
        )

    async with db.sessions() as session:
        user = await session.scalar(select(User).where(User.username == username))
        hashes = request.app[HASHES]
        try:
            ok = await hashes.run(verify_password, user.password_hash if user else None, password)
        except HashesBusy as exc:
            LOGINS.labels("rate_limited").inc()
            raise ApiError(503, f"busy: {exc}; try again", {"Retry-After": "1"}) from None
        if not ok or user is None:
            throttle.failed(username, address)
            LOGINS.labels("rejected").inc()
            audit.record(session, username, "login.failed", username, f"from {address}")
            await session.commit()
            raise ApiError(401, "wrong username or password")

        throttle.succeeded(username, address)
        if needs_rehash(user.password_hash):
            try:
                user.password_hash = await hashes.run(hash_password, password)
            except HashesBusy:
                pass  # rehashing waits for the next login
        token = secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + SESSION_TTL
        await session.execute(delete(Session).where(Session.expires <= now))
        session.add(
            Session(
                token_hash=token_hash(token),
                username=user.username,
                created_at=now,
                expires=expires,
            )
        )
        audit.record(session, user.username, "login", user.username, f"from {address}")
        await session.commit()

    LOGINS.labels("ok").inc()
    response = web.json_response(
        {"token": token, "user": user.public(), "expires": expires.isoformat(timespec="seconds")}
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def end_session(request: web.Request) -> str | None:
    """Delete the request's session (its token stops working at once); its hash, if any."""
    user = current_user(request)
    token = presented_token(request)
    hashed = token_hash(token) if token else None
    async with request.app[DB].sessions() as session:
        if hashed:
            await session.execute(delete(Session).where(Session.token_hash == hashed))
        audit.record(session, user.username, "logout", user.username)
        await session.commit()
    return hashed


async def session_expiry(request: web.Request, token: str) -> float:
    """When the session behind `token` expires, as a Unix time (0 when it does not exist)."""
    async with request.app[DB].sessions() as session:
        expires = await session.scalar(
            select(Session.expires).where(Session.token_hash == token_hash(token))
        )
    return expires.timestamp() if expires else 0.0
