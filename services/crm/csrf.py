"""Cross-site request forgery: every state-changing request must come from the desktop's own
origin.

The session cookie is SameSite=Strict, but that was the only defence: a cross-site
`text/plain` POST carrying the cookie was accepted. Browsers label every request with
`Sec-Fetch-Site` (and `Origin` on POST), which a page on another site cannot forge, so a
request that changes something (POST, PUT, PATCH, DELETE) is refused with 403 when either
header names another site. A request without both headers is not from a browser page (curl,
scripts, the tests): it passes when it authenticates with a bearer token, which no other
site can attach; relying on the ambient cookie, it must say where it comes from.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from crm.rest import ApiError, Handler

__all__ = ["SAFE_METHODS", "same_origin"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Sec-Fetch-Site values of a request the desktop itself made (or the user typed)
_OWN = frozenset({"same-origin", "none"})


def _problem(request: web.Request) -> str | None:
    """Why this request may be forged, or None."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in _OWN:
        return f"Sec-Fetch-Site is {site}"
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin == "null" or urlsplit(origin).netloc.lower() != request.host.lower():
            return f"Origin {origin} is not this site ({request.host})"
        return None
    if site is not None:
        return None  # same-origin by Sec-Fetch-Site
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return None  # not a browser page: a token no other site can attach
    if request.cookies:
        return "a cookie-authenticated request must carry Origin or Sec-Fetch-Site"
    return None


@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a state-changing request that another site may have made."""
    if request.method not in SAFE_METHODS:
        problem = _problem(request)
        if problem is not None:
            raise ApiError(403, f"cross-site request refused: {problem}")
    return await handler(request)
