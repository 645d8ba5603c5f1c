"""The desk's screen lock and the user's own desk settings.

Locking marks the session: until the user's password is given again the API answers 423 to
everything but /api/me, unlock and sign-out, and the live feed is closed (code 4003), so a
locked desk neither shows nor receives anything of a call or a customer. A wrong password is
counted like a failed login (crm.throttle): guessing at a locked desk is throttled too.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select, update

from crm import audit
from crm.auth import (
    DB,
    HASHES,
    LOCKED,
    THROTTLE,
    client_address,
    current_user,
    presented_token,
    token_hash,
)
from crm.desk import HUB
from crm.models import Session, User, utcnow
from crm.passwords import verify_password
from crm.rest import ApiError, json_body, text_field
from crm.throttle import HashesBusy

#: websocket close code of a locked desk (the browser shows the lock screen, no reconnect).
LOCKED_CLOSE = 4003
LANGUAGES = ("zh-CN", "en", "")


async def _set_lock(request: web.Request, locked: bool) -> None:
    hashed = token_hash(presented_token(request) or "")
    async with request.app[DB].sessions() as session:
        await session.execute(
            update(Session)
            .where(Session.token_hash == hashed)
            .values(locked_at=utcnow() if locked else None)
        )
        user = current_user(request)
        audit.record(session, user.username, "desk.lock" if locked else "desk.unlock")
        await session.commit()
    if locked:
        await request.app[HUB].end_session(hashed, LOCKED_CLOSE, b"locked")


async def me(request: web.Request) -> web.Response:
    """GET /api/me: the logged-in user, and whether their desk is locked."""
    return web.json_response(current_user(request).public() | {"locked": request[LOCKED]})


async def lock(request: web.Request) -> web.Response:
    """POST /api/lock: lock this session's desk."""
    await _set_lock(request, True)
    return web.json_response({"locked": True})


async def unlock(request: web.Request) -> web.Response:
    """POST /api/unlock {"password"}: the user's own password opens the desk again."""
    user = current_user(request)
    body = await json_body(request)
    password = text_field(body, "password", max_len=1024)
    assert password is not None
    address = client_address(request)
    throttle = request.app[THROTTLE]
    wait = throttle.retry_after(user.username, address)
    if wait:
        raise ApiError(
            429, f"too many wrong passwords; try again in {wait} s", {"Retry-After": str(wait)}
        )
    async with request.app[DB].sessions() as session:
        stored = await session.scalar(select(User.password_hash).where(User.id == user.id))
    try:
        ok = await request.app[HASHES].run(verify_password, stored, password)
    except HashesBusy as exc:
        raise ApiError(503, f"busy: {exc}; try again", {"Retry-After": "1"}) from None
    if not ok:
        throttle.failed(user.username, address)
        async with request.app[DB].sessions() as session:
            audit.record(session, user.username, "desk.unlock.failed", user.username, address)
            await session.commit()
        # 403, not 401: the session is valid, the desk must stay on the lock screen.
        raise ApiError(403, "wrong password: the desk stays locked")
    throttle.succeeded(user.username, address)
    await _set_lock(request, False)
    return web.json_response({"locked": False})


async def set_language(request: web.Request) -> web.Response:
    """POST /api/me/language {"language": "zh-CN"|"en"|""} ("" follows the browser)."""
    user = current_user(request)
    body = await json_body(request)
    language = text_field(body, "language", required=False, choices=LANGUAGES)
    if language is None:
        raise ApiError(400, "missing field: language")
    async with request.app[DB].sessions() as session:
        await session.execute(update(User).where(User.id == user.id).values(language=language))
        await session.commit()
    return web.json_response({"language": language})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/me", me)
    app.router.add_post("/api/lock", lock)
    app.router.add_post("/api/unlock", unlock)
    app.router.add_post("/api/me/language", set_language)
