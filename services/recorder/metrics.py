"""The recorder's Prometheus metrics (served on /metrics by the common side server).

Labels are bounded sets (status, failure reason), never call or agent ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ACTIVE_STREAMS = Gauge(
    "hotline_recorder_active_streams", "Ingest streams currently being written to disk"
)
RECORDINGS = Counter("hotline_recordings", "Recordings stored, by final status", ["status"])
FAILURES = Counter(
    "hotline_recording_failures", "Recordings that failed or were cut short, by reason", ["reason"]
)
BYTES_WRITTEN = Counter(
    "hotline_recorder_bytes_written", "Audio bytes (interleaved PCM) written to recording files"
)
REUPLOADS = Counter(
    "hotline_recorder_reuploads",
    "Uploads of a recording_id the catalog already had, by outcome: already_stored (answered "
    "with it), superseded (stored again over a cut upload), busy (another stream holds it)",
    ["outcome"],
)
