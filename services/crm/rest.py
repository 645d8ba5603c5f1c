"""REST conventions of the CRM API: every error is JSON `{"error": "..."}` saying what was
wrong, and request bodies are checked field by field so a 400 names the field at fault."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client caused or must know about, sent as JSON with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: no request of this API nests deeper; deeper is refused with 400, never parsed further.
MAX_JSON_DEPTH = 32


def _depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests lists/objects more than `limit` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ApiError, aiohttp's own 4xx (unknown path, wrong method) and crashes into JSON."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        message = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"method {request.method} not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        return error_response(exc.status, message, headers)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal error; see the CRM log")


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; 400 when it is missing, malformed or not an object.

    With `optional`, an empty body counts as `{}` (endpoints whose fields all have defaults).
    """
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "request body must be a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(
            400, f"request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
        ) from None
    if _depth_over(body, MAX_JSON_DEPTH):
        raise ApiError(400, f"request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def text_field(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = True,
    choices: Collection[str] | None = None,
    max_len: int = 256,
) -> str | None:
    """A string field of the body; 400 naming the field when absent, empty, too long or wrong."""
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"missing field: {name}")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"field {name} must be a string")
    if required and not value:
        raise ApiError(400, f"field {name} must not be empty")
    if len(value) > max_len:
        raise ApiError(400, f"field {name} is longer than {max_len} characters")
    if choices is not None and value not in choices:
        raise ApiError(400, f"field {name} must be one of: {', '.join(choices)}")
    return value
