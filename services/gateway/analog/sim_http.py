"""HTTP control API of the simulated exchange: play the outside world to the gateway.

Demos, end-to-end tests and people at a keyboard use it to ring a port, talk or press
keys as the caller, hang up the far end and fetch what the gateway sent. Every bad
field is a 400 whose message starts with the field name; an unknown port is a 404; a
request that does not fit the line's state (ringing an off-hook line) is a 409.
Port numbers are the card's 1-based numbers. See docs/analog-cards.md.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from gateway.dsp.callerid import CallerIdError
from gateway.media.prompts import PromptError, parse_wav

from .port import DIAL_CHARS
from .sim import LineBusy, SimCard, UnknownPort, wav_bytes

__all__ = ["MAX_UPLOAD", "make_control_app"]

MAX_UPLOAD = 8 * 1024 * 1024  # ~8 minutes of 16-bit 8 kHz audio
_CARD: web.AppKey[SimCard] = web.AppKey("card", SimCard)
_CALLER = re.compile(r"^[0-9+*#]{1,32}$")
_DATETIME = re.compile(r"^\d{8}$")


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _status(card: SimCard, k: int) -> dict[str, Any]:
    port = card.port(k)
    return {
        "port": k,
        "state": port.state.value,
        "hook": port.hook_state.value,
        **card.exchange.line(k).status(),
    }


def _port(request: web.Request) -> int:
    card = request.app[_CARD]
    raw = request.match_info["k"]
    try:
        k = int(raw)
        card.exchange.line(k)
    except (ValueError, UnknownPort):
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no port {raw!r}; ports are 1..{len(card.ports)}"}),
            content_type="application/json",
        ) from None
    return k


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        text = await request.text()
        data = json.loads(text) if text.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("body: not valid JSON") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _bad("body: must be a JSON object")
    return data


def _int(data: dict[str, Any], name: str, lo: int, hi: int, default: int | None) -> int | None:
    value = data.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(f"{name}: must be an integer {lo}..{hi}")
    return value


def _num(data: dict[str, Any], name: str, lo: float, hi: float, default: float | None) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise _bad(f"{name}: must be a number {lo}..{hi}")
    return float(value)


def _str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{name}: must be a string")
    return value


async def ring(request: web.Request) -> web.Response:
    """POST /ports/{k}/ring {"caller", "name"?, "datetime"?, "corrupt"?, "rings"?}"""
    k = _port(request)
    data = await _body(request)
    if "caller" not in data:
        raise _bad("caller: required (digits, or null for number withheld)")
    caller = _str(data, "caller")
    if caller is not None and not _CALLER.match(caller):
        raise _bad("caller: must be 1-32 characters of 0-9 + * #")
    name = _str(data, "name")
    if name is not None and (not 1 <= len(name) <= 64 or not name.isprintable()):
        raise _bad("name: must be 1-64 printable characters")
    when = _str(data, "datetime")
    if when is not None and not _DATETIME.match(when):
        raise _bad("datetime: must be MMDDHHMM")
    corrupt = data.get("corrupt", False)
    if not isinstance(corrupt, bool):
        raise _bad("corrupt: must be true or false")
    rings = _int(data, "rings", 1, 100, None)
    card = request.app[_CARD]
    try:
        card.exchange.ring(k, caller, name, datetime=when, corrupt=corrupt, rings=rings)
    except CallerIdError as exc:
        raise _bad(f"name: {exc}") from None
    except LineBusy as exc:
        raise web.HTTPConflict(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None
    return web.json_response(_status(card, k))


async def play(request: web.Request) -> web.Response:
    """POST /ports/{k}/play: a WAV (raw body or multipart field "file"), or JSON tone."""
    k = _port(request)
    card = request.app[_CARD]
    if request.content_type == "application/json":
        data = await _body(request)
        if "tone_hz" not in data:
            raise _bad("tone_hz: required (or upload a WAV)")
        hz = _num(data, "tone_hz", 50.0, 3900.0, None)
        ms = _int(data, "ms", 20, 60000, 1000)
        level = _num(data, "level_dbm0", -60.0, 0.0, -13.0)
        assert ms is not None
        card.exchange.play_tone(k, hz, ms, level)
        return web.json_response(_status(card, k))
    if request.content_type == "multipart/form-data":
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise _bad("file: multipart upload needs a WAV in field 'file'")
        raw = upload.file.read()
    else:
        raw = await request.read()
    try:
        pcm = parse_wav(raw, "wav")
    except PromptError as exc:
        raise _bad(str(exc)) from None  # message starts with "wav:"
    card.exchange.play(k, pcm)
    return web.json_response(_status(card, k))


async def dtmf(request: web.Request) -> web.Response:
    """POST /ports/{k}/dtmf {"digits", "on_ms"?, "off_ms"?}: the far party presses keys."""
    k = _port(request)
    data = await _body(request)
    digits = _str(data, "digits")
    if not digits or len(digits) > 64 or any(ch not in DIAL_CHARS for ch in digits):
        raise _bad("digits: required, 1-64 characters of 0-9 * # A-D")
    on_ms = _int(data, "on_ms", 40, 1000, 100)
    off_ms = _int(data, "off_ms", 40, 1000, 100)
    assert on_ms is not None and off_ms is not None
    card = request.app[_CARD]
    card.exchange.dtmf(k, digits.upper(), on_ms, off_ms)
    return web.json_response(_status(card, k))


async def hangup(request: web.Request) -> web.Response:
    """POST /ports/{k}/hangup {"signal": "busy"|"congestion"|"loop_drop"}"""
    k = _port(request)
    data = await _body(request)
    signal = data.get("signal", "busy")
    if signal not in ("busy", "congestion", "loop_drop"):
        raise _bad("signal: must be busy, congestion or loop_drop")
    card = request.app[_CARD]
    try:
        card.exchange.hangup(k, signal)
    except LineBusy as exc:
        raise web.HTTPConflict(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None
    return web.json_response(_status(card, k))


async def captured(request: web.Request) -> web.Response:
    """GET /ports/{k}/captured: WAV (8 kHz mono 16-bit) of what the gateway sent."""
    k = _port(request)
    pcm = request.app[_CARD].exchange.captured(k)
    return web.Response(body=wav_bytes(pcm), content_type="audio/wav")


async def ports(request: web.Request) -> web.Response:
    """GET /ports: every port's driver state and the exchange's view of its line."""
    card = request.app[_CARD]
    return web.json_response([_status(card, k) for k in range(1, len(card.ports) + 1)])


async def answer_mode(request: web.Request) -> web.Response:
    """POST /ports/{k}/answer {"polarity_after_ms": 800 | null}: how the far party of the
    next outbound call answers (polarity reversal after the last digit, or none)."""
    card = request.app[_CARD]
    k = _port(request)
    data = await _body(request)
    value = data.get("polarity_after_ms")
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 60000
    ):
        raise _bad("polarity_after_ms: must be null or an integer 0..60000")
    card.exchange.line(k).polarity_answer_ms = value
    return web.json_response(_status(card, k))


def make_control_app(card: SimCard) -> web.Application:
    """The aiohttp application controlling ``card``'s exchange."""
    app = web.Application(client_max_size=MAX_UPLOAD)
    app[_CARD] = card
    app.router.add_get("/ports", ports)
    app.router.add_post("/ports/{k}/ring", ring)
    app.router.add_post("/ports/{k}/answer", answer_mode)
    app.router.add_post("/ports/{k}/play", play)
    app.router.add_post("/ports/{k}/dtmf", dtmf)
    app.router.add_post("/ports/{k}/hangup", hangup)
    app.router.add_get("/ports/{k}/captured", captured)
    return app
