"""The core's `Recorder`: every bridged call is spooled to the gateway's disk during the call
(`spool.py`) and uploaded to the recorder service after it (`uploader.py`).

Nothing here waits on the recorder: the media tap only buffers, `finish()` only seals, so a
recorder that is down, slow or restarting can delay a recording but never a call's cleanup or
the release of its media ports; the recording reaches the recorder when it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.spool import Spool, SpoolWriter
from gateway.uploader import Uploader

__all__ = ["SpoolCollector", "SpoolingRecorder"]


class SpoolingRecorder:
    """Starts each recording in the spool; the uploader takes it once it is sealed."""

    def __init__(self, spool: Spool, uploader: Uploader) -> None:
        self.spool = spool
        self.uploader = uploader

    def start(
        self, call_id: str, agent_id: str, queue: str, trace: dict[str, str] | None = None
    ) -> SpoolWriter:
        return self.spool.open(
            call_id, agent_id, queue, on_sealed=self.uploader.submit, trace=trace
        )


class SpoolCollector(Collector):
    """The spool at scrape time: recordings by state, bytes, and how long the oldest one has
    been waiting for the recorder (labels are states only, never call ids)."""

    def __init__(
        self, spool: Spool, uploader: Uploader, wall: Callable[[], float] = time.time
    ) -> None:
        self.spool, self.uploader, self.wall = spool, uploader, wall

    def collect(self) -> Iterator[GaugeMetricFamily]:
        recordings = GaugeMetricFamily(
            "hotline_gateway_recordings_spooled",
            "Recordings in the gateway's spool: being recorded (live calls) or waiting for "
            "the recorder to take them",
            labels=["state"],
        )
        waiting = list(self.uploader.waiting.values())
        recordings.add_metric(["recording"], len(self.spool.live))
        recordings.add_metric(["waiting"], len(waiting))
        yield recordings
        yield GaugeMetricFamily(
            "hotline_gateway_recording_spool_bytes",
            "Bytes of the recordings in the gateway's spool",
            value=max(0, self.spool.size_bytes),
        )
        oldest = min((e.waiting_since for e in waiting), default=None)
        yield GaugeMetricFamily(
            "hotline_gateway_recording_spool_oldest_seconds",
            "How long the oldest recording in the spool has waited for the recorder (0: none)",
            value=0.0 if oldest is None else max(0.0, self.wall() - oldest),
        )
