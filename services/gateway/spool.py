"""The recording spool: every bridged call is recorded to the gateway's own disk first.

The recorder may be down, slow or unreachable during a call; the call must not notice. So the
media tap (20 ms clock) only appends to an in-memory buffer, which goes to a file about once a
second through one disk thread (a stalled disk never stalls the media clock), and `finish()`
only seals the spool: the uploader (`uploader.py`) sends it to the recorder afterwards and
deletes it once the recorder has replied. What is on disk survives a gateway crash and is
uploaded by the next start.

One recording is up to three files in the spool directory:

    <recording_id>.json   what RecordingStart carries (written first, atomically; written
                          again, atomically, whenever a hold of the call starts or ends)
    <recording_id>.pcm    the audio so far: interleaved stereo int16 LE (L R L R ...),
                          left = caller, right = agent; 32 KB per second of call
    <recording_id>.end    {"samples": N}: the call ended normally and the .pcm holds all of
                          it (written after the .pcm was fsynced): the recording is complete

The holds of the call are kept in the .json as offsets from the recording's first sample
(counted in tapped frames, so they line up with the audio exactly); a hold still open when the
recording ends is closed at its end, also when a crash ended it.

A spool without `.end` is a recording whose gateway died during the call (or whose disk
failed): it is uploaded as it is, without the end-of-recording mark, and stored as `partial`.
Spools the recorder refuses outright are moved to `rejected/` and kept for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter

from gateway.core.contracts import Frame
from gateway.media.audio import SAMPLE_RATE

__all__ = [
    "FAILURES",
    "FLUSH_FRAMES",
    "HoldMark",
    "Spool",
    "SpoolEntry",
    "SpoolMeta",
    "SpoolWriter",
]

log = logging.getLogger(__name__)

FAILURES = Counter(
    "hotline_gateway_recording_failures",
    "Recordings (or their ends) the gateway could not keep or deliver, by reason",
    ["reason"],
)
#: 20 ms frames buffered in memory before they are handed to the disk: about one second
FLUSH_FRAMES = 50
#: audio handed to the disk thread and not yet written, over all calls; beyond it the disk is
#: stalled and a recording is cut (kept up to there, uploaded as partial) rather than memory
#: growing without bound. 32 MiB is about 17 minutes of one call, or a minute of 16.
MAX_PENDING_BYTES = 32 * 1024 * 1024
#: bytes per stereo sample in the .pcm file
SAMPLE_BYTES = 4
REJECTED = "rejected"
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Disk(Protocol):
    """Runs disk work in order, off the event loop (a one-thread executor; inline in tests)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]: ...

    def shutdown(self, wait: bool = True) -> None: ...


def failure_reason(exc: OSError) -> str:
    """The metric label of a disk error."""
    return "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"


@dataclass(frozen=True)
class HoldMark:
    """One hold of the call within its recording (ms from the first sample); `end_ms` None
    while the hold is still on."""

    start_ms: int
    end_ms: int | None
    leg_id: str  # the leg that held
    held_by: str  # that leg's role ("agent", "caller", ...)

    def closed(self, at_ms: int) -> HoldMark:
        """This hold, ended at `at_ms` if it was still open."""
        if self.end_ms is not None:
            return self
        return HoldMark(self.start_ms, max(self.start_ms, at_ms), self.leg_id, self.held_by)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HoldMark:
        start, end = int(data["start_ms"]), data.get("end_ms")
        end_ms = None if end is None else int(end)
        if start < 0 or (end_ms is not None and end_ms < start):
            raise ValueError(f"bad hold span {start}..{end_ms}")
        return cls(start, end_ms, str(data.get("leg_id", "")), str(data.get("held_by", "")))


@dataclass(frozen=True)
class SpoolMeta:
    """What the recorder needs to know about a recording (RecordingStart)."""

    recording_id: str
    call_id: str
    agent_id: str
    queue: str
    sample_rate: int
    started_at: float  # wall clock, seconds since the epoch
    #: W3C context of the call's trace, so the upload (maybe after a restart) joins that trace
    trace: dict[str, str] = field(default_factory=dict)
    #: the call's holds so far, oldest first (the last one may still be open)
    holds: tuple[HoldMark, ...] = ()

    def to_json(self) -> bytes:
        data = dict(self.__dict__, holds=[h.__dict__ for h in self.holds])
        return json.dumps(data, sort_keys=True).encode()

    def holds_closed(self, at_ms: int) -> SpoolMeta:
        """This metadata with its holds cut to a recording that ends at `at_ms`: one still open
        ends there, one begun after it (audio a crash lost) is dropped."""
        holds = tuple(
            HoldMark(h.start_ms, min(at_ms, h.end_ms), h.leg_id, h.held_by)
            if h.end_ms is not None
            else h.closed(at_ms)
            for h in self.holds
            if h.start_ms < at_ms
        )
        return self if holds == self.holds else dataclasses.replace(self, holds=holds)

    @classmethod
    def from_json(cls, raw: bytes) -> SpoolMeta:
        """Parse a .json spool file; ValueError when it is not one."""
        try:
            data = json.loads(raw)
            meta = cls(
                recording_id=str(data["recording_id"]),
                call_id=str(data["call_id"]),
                agent_id=str(data.get("agent_id", "")),
                queue=str(data.get("queue", "")),
                sample_rate=int(data["sample_rate"]),
                started_at=float(data["started_at"]),
                trace={str(k): str(v) for k, v in dict(data.get("trace") or {}).items()},
                holds=tuple(HoldMark.from_dict(dict(h)) for h in data.get("holds") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a spool metadata file: {exc}") from None
        if not _ID.match(meta.recording_id) or not meta.call_id:
            raise ValueError("not a spool metadata file: bad recording_id or call_id")
        return meta


@dataclass(frozen=True)
class SpoolEntry:
    """A recording whose call is over (or whose gateway died), waiting for its upload."""

    meta: SpoolMeta
    #: the call ended normally and `samples` is all of it: uploaded with the end mark
    complete: bool
    #: stereo samples (per side) to upload from the .pcm file
    samples: int
    #: wall-clock time it started waiting (sealed, or last written before a crash)
    waiting_since: float
    #: bytes of its files, for the spool's accounting
    size_bytes: int

    @property
    def recording_id(self) -> str:
        return self.meta.recording_id


class Spool:
    """The spool directory: opens writers, finds what a previous run left, deletes what was
    uploaded, keeps count of its bytes."""

    def __init__(
        self,
        root: Path,
        disk: Disk | None = None,
        *,
        flush_frames: int = FLUSH_FRAMES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.disk: Disk = disk or ThreadPoolExecutor(1, thread_name_prefix="recording-spool")
        self.flush_frames = flush_frames
        self.max_pending_bytes = max_pending_bytes
        self.clock = clock
        self.live: dict[str, SpoolWriter] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self._pending = 0
        #: the directory, open for its fsyncs (disk thread only; closed with the spool)
        self._dir_fd: int | None = None
        self._close_dir = weakref.finalize(self, _close_quietly, None)

    # ---- paths ----------------------------------------------------------------------------
    def meta_path(self, recording_id: str) -> Path:
        return self.root / f"{recording_id}.json"

    def pcm_path(self, recording_id: str) -> Path:
        return self.root / f"{recording_id}.pcm"

    def end_path(self, recording_id: str) -> Path:
        return self.root / f"{recording_id}.end"

    def files(self, recording_id: str) -> tuple[Path, Path, Path]:
        return (
            self.end_path(recording_id),
            self.pcm_path(recording_id),
            self.meta_path(recording_id),
        )

    # ---- accounting (the loop and the disk thread both count) ------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes of the recordings in the spool (being written or waiting for upload)."""
        return self._bytes

    def _grow(self, n: int) -> None:
        with self._lock:
            self._bytes += n

    def reserve(self, n: int) -> bool:
        """Room for `n` more bytes of audio on their way to the disk; False: the disk is
        stalled beyond MAX_PENDING_BYTES."""
        with self._lock:
            if self._pending + n > self.max_pending_bytes:
                return False
            self._pending += n
            return True

    def _release(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    # ---- writing ---------------------------------------------------------------------------
    def open(
        self,
        call_id: str,
        agent_id: str,
        queue: str,
        on_sealed: Callable[[SpoolEntry], None],
        sample_rate: int = SAMPLE_RATE,
        trace: dict[str, str] | None = None,
    ) -> SpoolWriter:
        """Start spooling a recording; `on_sealed(entry)` runs on the event loop once it is
        sealed and ready for upload (not at all if nothing could be kept)."""
        meta = SpoolMeta(
            recording_id=str(uuid.uuid4()),
            call_id=call_id,
            agent_id=agent_id,
            queue=queue,
            sample_rate=sample_rate,
            started_at=self.clock(),
            trace=dict(trace or {}),
        )
        writer = SpoolWriter(self, meta, on_sealed, asyncio.get_running_loop())
        self.live[meta.recording_id] = writer
        return writer

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Queue disk work; it must not raise (each job catches its own errors)."""
        try:
            self.disk.submit(fn, *args)
        except RuntimeError:  # the executor is shut down: the gateway is stopping
            log.error("recording spool is closed; %s not run", getattr(fn, "__name__", fn))

    def root_fd(self) -> int:
        """The spool directory (made if missing), kept open for the fsyncs that make its
        entries durable: opened once, not twice per recording (disk thread)."""
        if self._dir_fd is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._close_dir.detach()
            self._close_dir = weakref.finalize(self, _close_quietly, self._dir_fd)
        return self._dir_fd

    def _reopen_root(self) -> int:
        """The directory went away (removed by hand while running): made and opened again."""
        self._close_dir()
        self._dir_fd = None
        return self.root_fd()

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Write a small file of the spool directory so that it is either whole or absent, and
        durable: a temporary file written and fsynced, renamed over `path`, the directory
        fsynced. A failure leaves `path` as it was and no temporary file. A spool directory
        removed while running (by hand) is made again."""
        root = self.root_fd()
        try:
            self._replace(path, data)
        except FileNotFoundError:
            if self.root.is_dir():
                raise
            root = self._reopen_root()
            self._replace(path, data)
        os.fsync(root)

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        """`path` replaced by a temporary file holding `data`, written and fsynced."""
        tmp = f"{path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove(self, recording_id: str) -> int:
        """Delete a recording's files (and a leftover temporary); returns the bytes freed."""
        freed = 0
        for path in self.files(recording_id):
            for p in (path, path.with_name(path.name + ".tmp")):
                try:
                    size = p.stat().st_size
                    p.unlink()
                    freed += size
                except FileNotFoundError:
                    pass
        return freed

    # ---- after the call ----------------------------------------------------------------------
    def delete(self, entry: SpoolEntry) -> None:
        """The recorder has the recording: forget it (blocking: call in a thread). Its size is
        the entry's, so this only unlinks (no temporary file is left by a failed write, and
        a crash's are removed by `scan`)."""
        for path in self.files(entry.recording_id):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._grow(-entry.size_bytes)

    def reject(self, entry: SpoolEntry) -> None:
        """The recorder refused the recording: move it out of the way, keep it for a human
        (blocking: call in a thread)."""
        self._quarantine(entry.recording_id)
        self._grow(-entry.size_bytes)

    def _quarantine(self, stem: str) -> None:
        target = self.root / REJECTED
        target.mkdir(exist_ok=True)
        for path in self.root.glob(f"{stem}.*"):
            shutil.move(path, target / path.name)

    def scan(self) -> list[SpoolEntry]:
        """Every recording a previous run left, oldest first (blocking: call in a thread at
        start, before any writer is opened). A spool without `.end` was cut by a crash."""
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        entries: list[SpoolEntry] = []
        known: set[str] = set()
        for meta_path in sorted(self.root.glob("*.json")):
            stem = meta_path.stem
            known.add(stem)
            if stem in self.live:  # being recorded by this run: not a leftover
                continue
            try:
                meta = SpoolMeta.from_json(meta_path.read_bytes())
                if meta.recording_id != stem:
                    raise ValueError(f"names recording {meta.recording_id}")
            except (OSError, ValueError) as exc:
                FAILURES.labels("corrupt_spool").inc()
                log.error(
                    "spooled recording %s cannot be read (%s); moved to %s/", stem, exc, REJECTED
                )
                self._quarantine(stem)
                continue
            entries.append(self._leftover(meta))
        for stray in self.root.glob("*.pcm"):
            if stray.stem not in known:  # audio without its call: nothing to file it under
                FAILURES.labels("corrupt_spool").inc()
                log.error("spooled audio %s has no metadata; moved to %s/", stray.name, REJECTED)
                self._quarantine(stray.stem)
        if entries:
            partial = sum(not e.complete for e in entries)
            log.info(
                "%d recordings left in the spool by the previous run (%d cut by its end); "
                "uploading them",
                len(entries),
                partial,
            )
        return sorted(entries, key=lambda e: e.waiting_since)

    def _leftover(self, meta: SpoolMeta) -> SpoolEntry:
        rid = meta.recording_id
        sizes, mtimes = 0, []
        for path in self.files(rid):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            sizes += st.st_size
            mtimes.append(st.st_mtime)
        try:
            samples = self.pcm_path(rid).stat().st_size // SAMPLE_BYTES
        except FileNotFoundError:
            samples = 0
        ended = self._end_samples(rid)
        complete = ended is not None and ended <= samples
        if ended is not None and ended > samples:
            log.warning(
                "spooled recording %s of call %s says %d samples but holds %d; uploading it "
                "as partial",
                rid,
                meta.call_id,
                ended,
                samples,
            )
        if complete and ended is not None:
            samples = ended
        self._grow(sizes)
        return SpoolEntry(
            meta=meta.holds_closed(samples * 1000 // meta.sample_rate),
            complete=complete,
            samples=samples,
            waiting_since=max(mtimes, default=self.clock()),
            size_bytes=sizes,
        )

    def _end_samples(self, recording_id: str) -> int | None:
        try:
            data = json.loads(self.end_path(recording_id).read_bytes())
            return int(data["samples"])
        except FileNotFoundError:
            return None
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.warning("end mark of spooled recording %s unreadable: %s", recording_id, exc)
            return None

    async def close(self, timeout_s: float = 10.0) -> None:
        """Finish the disk work queued so far (seals of the last calls), then stop the thread."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self.disk.shutdown, True), timeout_s)
        except TimeoutError:
            log.error("recording spool disk work not finished after %.0fs", timeout_s)
        else:
            self._close_dir()


def _close_quietly(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_LE_I16 = np.dtype("<i2")


class _TapError(Exception):
    """A tapped frame that is not audio; ``samples`` per side were good before it."""

    def __init__(self, cause: Exception, samples: int) -> None:
        super().__init__(cause)
        self.cause, self.samples = cause, samples


def _sides(lefts: list[Frame], rights: list[Frame]) -> tuple[bytes, bytes]:
    """The tapped frames of both sides as little-endian int16 bytes of equal length, a short
    frame padded with silence to its pair's length (raises :class:`_TapError`)."""
    try:
        a, b = np.concatenate(lefts), np.concatenate(rights)
    except (ValueError, TypeError):
        pass  # 0-d or mixed-rank frames: the general way below says which one is wrong
    else:
        # The common case: 1-D int16 frames in pairs of equal length, which the general way
        # would convert frame by frame into the same bytes.
        if (
            a.dtype == _LE_I16
            and b.dtype == _LE_I16
            and a.ndim == 1
            and b.ndim == 1
            and list(map(len, lefts)) == list(map(len, rights))
        ):
            return a.tobytes(), b.tobytes()
    left: list[bytes] = []
    right: list[bytes] = []
    samples = 0
    for l_frame, r_frame in zip(lefts, rights, strict=True):
        try:
            la = np.asarray(l_frame, dtype="<i2").reshape(-1)
            rb = np.asarray(r_frame, dtype="<i2").reshape(-1)
            if len(la) != len(rb):  # keep both sides aligned: pad the short one with silence
                n = max(len(la), len(rb))
                la, rb = np.pad(la, (0, n - len(la))), np.pad(rb, (0, n - len(rb)))
        except Exception as exc:
            raise _TapError(exc, samples) from exc
        left.append(la.tobytes())
        right.append(rb.tobytes())
        samples += len(la)
    return b"".join(left), b"".join(right)


class SpoolWriter:
    """One recording being spooled: the core's `Recording` (`tap` on the 20 ms clock, then
    `finish`). Only `tap` and `finish` run on the event loop; the `_` jobs run on the disk."""

    def __init__(
        self,
        spool: Spool,
        meta: SpoolMeta,
        on_sealed: Callable[[SpoolEntry], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.spool = spool
        self.meta = meta
        self.on_sealed = on_sealed
        self.loop = loop
        #: why this recording is cut short (a metric reason), once something went wrong
        self.damaged: str | None = None
        self.finished = False
        #: the frames tapped since the last flush, as given (converted once per flush)
        self._left: list[Frame] = []
        self._right: list[Frame] = []
        #: samples per side flushed so far (with the buffered ones: the clock of the hold marks)
        self._tapped = 0
        # touched only by the disk thread:
        self._meta_bytes = 0
        self._fd: int | None = None
        self._created = False
        self._written = 0
        spool.submit(self._create)

    @property
    def recording_id(self) -> str:
        return self.meta.recording_id

    # ---- on the event loop -------------------------------------------------------------------
    def tap(self, left: Frame, right: Frame) -> None:
        """One frame per side (the bridge calls it every 20 ms): buffered, never blocks, never
        raises. The frames are kept as they are until the flush (up to `flush_frames` ticks
        later) converts a second's worth at once, so a caller must not change them afterwards
        (the bridge and the room pass decoded, copied or read-only frames)."""
        if self.finished or self.damaged is not None:
            return
        left_frames = self._left
        left_frames.append(left)
        self._right.append(right)
        if len(left_frames) >= self.spool.flush_frames:
            self._flush()

    def _now_ms(self) -> int:
        buffered = 0
        for a, b in zip(self._left, self._right, strict=True):
            try:
                buffered += max(np.size(a), np.size(b))
            except Exception:  # not audio: the flush will cut the recording there
                break
        return (self._tapped + buffered) * 1000 // self.meta.sample_rate

    def hold_started(self, leg_id: str, held_by: str) -> None:
        """The call went on hold here: marked in the spool's metadata (a hold already on is
        kept)."""
        holds = self.meta.holds
        if self.finished or (holds and holds[-1].end_ms is None):
            return
        self._remark(holds + (HoldMark(self._now_ms(), None, leg_id, held_by),))

    def hold_ended(self) -> None:
        """The hold is over: its end is marked (nothing when no hold is on)."""
        holds = self.meta.holds
        if self.finished or not holds or holds[-1].end_ms is not None:
            return
        self._remark(holds[:-1] + (holds[-1].closed(self._now_ms()),))

    def _remark(self, holds: tuple[HoldMark, ...]) -> None:
        self.meta = dataclasses.replace(self.meta, holds=holds)
        self.spool.submit(self._rewrite_meta, self.meta)

    def _flush(self) -> None:
        lefts, rights = self._left, self._right
        self._left, self._right = [], []
        try:
            left, right = _sides(lefts, rights)
        except _TapError as exc:
            self._tapped += exc.samples
            self._damage("tap_error", f"frame could not be buffered: {exc.cause!r}")
            return
        self._tapped += len(left) // 2
        size = len(left) + len(right)
        if not self.spool.reserve(size):
            self._damage(
                "backlog",
                f"the spool disk has more than {self.spool.max_pending_bytes} bytes to write",
            )
            return
        self.spool.submit(self._append, left, right, size)

    async def finish(self) -> None:
        """The call is over: write what is buffered and seal the spool for upload. Returns at
        once: it waits neither on the disk nor on the recorder."""
        if self.finished:
            return
        self.hold_ended()  # a hold still on ends with the recording
        if self._left and self.damaged is None:
            self._flush()
        self.finished = True
        self._left.clear()
        self._right.clear()
        self.spool.submit(self._seal)

    def _damage(
        self,
        reason: str,
        detail: str,
        outcome: str = "it is kept up to here and uploaded as partial",
    ) -> None:
        """Cut the recording here (either thread); counted and logged once."""
        if self.damaged is not None:
            return
        self.damaged = reason
        FAILURES.labels(reason).inc()
        log.error(
            "recording %s of call %s: %s; %s",
            self.recording_id,
            self.meta.call_id,
            detail,
            outcome,
            extra={"call_id": self.meta.call_id, "recording_id": self.recording_id},
        )

    # ---- on the disk thread -----------------------------------------------------------------
    def _create(self) -> None:
        spool, rid = self.spool, self.recording_id
        try:
            raw = self.meta.to_json()
            spool.write_atomic(spool.meta_path(rid), raw)
            spool._grow(len(raw))
            self._meta_bytes = len(raw)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(spool.pcm_path(rid), flags, 0o640)
            self._created = True
        except OSError as exc:
            if self.damaged is not None:  # already cut (and counted): say it is gone now
                log.error(
                    "recording %s of call %s cannot be spooled (%s); this recording is lost",
                    rid,
                    self.meta.call_id,
                    exc,
                )
            self._damage(
                failure_reason(exc),
                f"cannot create its spool files: {exc}",
                "this recording is lost",
            )
            spool._grow(-spool.remove(rid))

    def _rewrite_meta(self, meta: SpoolMeta) -> None:
        """The metadata with new hold marks replaces the old (atomically: a crash leaves one
        or the other); a failure loses the marks, never the recording."""
        if not self._created:
            return
        raw = meta.to_json()
        try:
            self.spool.write_atomic(self.spool.meta_path(self.recording_id), raw)
        except OSError as exc:
            FAILURES.labels(failure_reason(exc)).inc()
            log.error(
                "recording %s of call %s: hold marks could not be spooled: %s",
                self.recording_id,
                meta.call_id,
                exc,
            )
            return
        self.spool._grow(len(raw) - self._meta_bytes)
        self._meta_bytes = len(raw)

    def _append(self, left: bytes, right: bytes, reserved: int) -> None:
        try:
            if self._fd is None:
                return
            pcm = np.empty(len(left), dtype="<i2")  # int16 count of both sides together
            pcm[0::2] = np.frombuffer(left, dtype="<i2")
            pcm[1::2] = np.frombuffer(right, dtype="<i2")
            data = pcm.data.cast("B")
            try:
                while data:
                    n = os.write(self._fd, data)
                    data = data[n:]
                    self._written += n
                    self.spool._grow(n)
            except OSError as exc:
                self._cut_to_whole_samples()
                self._damage(failure_reason(exc), f"spool write failed: {exc}")
                self._close_fd()
        finally:
            self.spool._release(reserved)

    def _cut_to_whole_samples(self) -> None:
        """After a short write, drop a torn stereo sample so both sides stay aligned."""
        whole = self._written - self._written % SAMPLE_BYTES
        if whole == self._written or self._fd is None:
            return
        try:
            os.ftruncate(self._fd, whole)
            self.spool._grow(whole - self._written)
            self._written = whole
        except OSError:
            log.exception("cannot trim spooled recording %s", self.recording_id)

    def _close_fd(self, sync: bool = False) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _seal(self) -> None:
        spool, rid = self.spool, self.recording_id
        if not self._created:  # nothing could be written: nothing to upload
            self._to_loop(spool.live.pop, rid, None)
            return
        complete = self.damaged is None
        try:
            self._close_fd(sync=True)
        except OSError as exc:
            self._damage(failure_reason(exc), f"spool could not be synced: {exc}")
            complete = False
        samples = self._written // SAMPLE_BYTES
        size = self._written
        if complete:
            try:
                end = json.dumps({"samples": samples, "ended_at": spool.clock()}).encode()
                spool.write_atomic(spool.end_path(rid), end)
                spool._grow(len(end))
                size += len(end)
            except OSError as exc:
                self._damage(failure_reason(exc), f"end of recording could not be marked: {exc}")
                complete = False
        size += self._meta_bytes  # the .json as last written (by this thread)
        entry = SpoolEntry(self.meta, complete, samples, spool.clock(), size)
        self._to_loop(self._sealed, entry)

    def _to_loop(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (gateway exiting): the next start uploads it
            pass

    def _sealed(self, entry: SpoolEntry) -> None:
        self.spool.live.pop(self.recording_id, None)
        self.on_sealed(entry)
