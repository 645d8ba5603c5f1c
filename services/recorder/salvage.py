"""Salvage: completes recordings whose writer died (recorder crash, kill -9, node restart).

Such a recording is still `recording` in the catalog and its `.part` file stopped growing. On
start and then periodically, each one that is not a live stream of this process and whose file
has been idle for `stale_after_s` gets its header repaired from the file length, is committed
as `partial`, and is announced like any other recording. The idle rule keeps a replica sharing
the same volume from stealing another replica's live stream (live streams write every 20 ms).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from common.tasks import cancel_and_wait
from recorder import metrics
from recorder.announcer import Announcer
from recorder.catalog import PARTIAL, Catalog
from recorder.ingest import Ingest
from recorder.storage import RecordingStore

log = logging.getLogger(__name__)

STALE_AFTER_S = 120.0
INTERVAL_S = 60.0


class Salvager:
    """Periodic task turning orphaned recordings into `partial` ones."""

    def __init__(
        self,
        store: RecordingStore,
        catalog: Catalog,
        announcer: Announcer,
        ingest: Ingest,
        stale_after_s: float = STALE_AFTER_S,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.announcer = announcer
        self.ingest = ingest
        self.stale_after_s = stale_after_s
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder-salvage")

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("salvage sweep failed; next one in %.0fs", self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> int:
        """Salvage every orphan found now; returns how many were completed."""
        done = 0
        for rec in await self.catalog.in_progress():
            if self.ingest.owns(rec.recording_id):
                continue
            try:
                stored = await self.store.salvage(rec.path, rec.sample_rate, self.stale_after_s)
            except (OSError, ValueError):
                log.exception(
                    "cannot salvage recording %s (%s)",
                    rec.recording_id,
                    rec.path,
                    extra={"recording_id": rec.recording_id, "call_id": rec.call_id},
                )
                continue
            if stored is None:
                continue
            failure = (
                "recorder_restart: the end of the stream was never recorded (recorder "
                "stopped, or its catalog was unreachable); salvaged from disk"
            )
            finished = await self.catalog.finish(
                rec.recording_id,
                status=PARTIAL,
                ended_at=rec.started_at + timedelta(milliseconds=stored.duration_ms),
                duration_ms=stored.duration_ms,
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                failure=failure,
            )
            if not finished:  # another replica got there first
                continue
            done += 1
            metrics.RECORDINGS.labels(PARTIAL).inc()
            metrics.FAILURES.labels("recorder_restart").inc()
            log.warning(
                "salvaged recording %s of call %s: %d ms",
                rec.recording_id,
                rec.call_id,
                stored.duration_ms,
                extra={"recording_id": rec.recording_id, "call_id": rec.call_id},
            )
            await self.announcer.announce(rec.recording_id)
        return done

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
