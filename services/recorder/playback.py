"""Playback: reading a stored recording back out, in chunks, for the CRM's player.

Only recordings the catalog says are stored (complete, or partial: a cut call's audio is
still evidence) are served; one still being written or one that failed is refused with the
reason. The CRM decides who may listen and audits each play; the recorder only serves bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from recorder.catalog import ANNOUNCED_STATUSES, Catalog
from recorder.storage import RecordingStore

#: bytes per chunk: a few seconds of stereo 8 kHz audio, well under gRPC's message limit.
CHUNK_BYTES = 64 * 1024


class NotStored(LookupError):
    """No such recording."""


class NotPlayable(RuntimeError):
    """The recording exists but cannot be played (yet); the message says why."""


@dataclass(frozen=True)
class Playback:
    recording_id: str
    status: str
    size_bytes: int
    chunks: AsyncIterator[bytes]


async def open_playback(store: RecordingStore, catalog: Catalog, recording_id: str) -> Playback:
    """The recording's file as chunks; NotStored / NotPlayable when it cannot be served."""
    row = await catalog.get(recording_id)
    if row is None:
        raise NotStored(f"no recording {recording_id}")
    if row.status not in ANNOUNCED_STATUSES:
        raise NotPlayable(f"recording {recording_id} is {row.status}, not stored for playback")
    try:
        handle = await asyncio.to_thread(store.open_committed, row.path)
    except FileNotFoundError:
        raise NotStored(f"recording {recording_id} is catalogued but its file is gone") from None
    size = await asyncio.to_thread(lambda: handle.seek(0, 2))
    await asyncio.to_thread(handle.seek, 0)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while data := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield data
        finally:
            handle.close()

    return Playback(recording_id, row.status, size, chunks())
