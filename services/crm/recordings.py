"""Playing a call's recording in the desk: the CRM checks the user may (crm.history.may_play:
the recording rules of the CDR list), audits the play, and streams the WAV file from the
recorder (`Recorder.Fetch`, mTLS) to the browser's audio player."""

from __future__ import annotations

import asyncio

import grpc
from aiohttp import web

from crm import audit
from crm.app_keys import CDRS, RECORDER
from crm.auth import DB, current_user
from crm.history import may_play
from crm.recording_archive import FIRST_CHUNK_S, RecorderError
from crm.rest import ApiError


async def play(request: web.Request) -> web.StreamResponse:
    """GET /api/cdrs/{call_id}/recordings/{recording_id}: the recording as audio/wav."""
    user = current_user(request)
    call_id, recording_id = request.match_info["call_id"], request.match_info["recording_id"]
    row = await request.app[CDRS].get(call_id)
    known = row is not None and (
        recording_id == row.recording_id
        or any(r.get("recording_id") == recording_id for r in row.recordings or [])
    )
    if not known:
        raise ApiError(404, f"call {call_id} has no recording {recording_id}")
    assert row is not None
    allowed = may_play(user, row)
    async with request.app[DB].sessions() as session:
        audit.record(
            session,
            user.username,
            "recording.play" if allowed else "recording.play.refused",
            recording_id,
            f"call {call_id}",
        )
        await session.commit()
    if not allowed:
        raise ApiError(403, f"{user.username} may not play the recordings of call {call_id}")
    chunks = request.app[RECORDER].chunks(recording_id)
    try:
        first = await asyncio.wait_for(anext(chunks), FIRST_CHUNK_S)
    except TimeoutError:
        await chunks.aclose()
        raise RecorderError(grpc.StatusCode.DEADLINE_EXCEEDED, "") from None
    except StopAsyncIteration:
        raise ApiError(502, f"the recorder sent recording {recording_id} empty") from None
    response = web.StreamResponse(
        headers={
            "Content-Type": "audio/wav",
            "Content-Length": str(first.total_bytes),
            "Content-Disposition": f'inline; filename="{recording_id}.wav"',
        }
    )
    await response.prepare(request)
    await response.write(first.data)
    try:
        async for chunk in chunks:
            await response.write(chunk.data)
    except RecorderError:
        pass  # cut short: the Content-Length already sent tells the browser
    finally:
        await chunks.aclose()
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/cdrs/{call_id}/recordings/{recording_id}", play)
