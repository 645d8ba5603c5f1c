"""Leases: among replicas of a service, exactly one holds the lease and acts; the others wait.

A holder calls `acquire()` (returns once it holds the lease), checks `held()` before every
action with effects outside the process (a command to another service, an event), and watches
`lost`: a holder that loses the lease must stop acting at once (fencing). Two implementations:

- `FileLease`: an exclusive `flock` on a file, for replicas on one machine (the local stack).
  The kernel gives the lock to one process and takes it back the instant that process dies
  (even `kill -9`), so a standby takes over within its poll interval and two holders are
  impossible; no clock, no broker, no timeout to tune. It cannot span machines, and a holder
  that hangs without dying keeps it (only a liveness probe would end it).
- `KubernetesLease`: a `coordination.k8s.io/v1` Lease object on the API server, renewed by
  the holder; the algorithm of client-go's leader election. A holder that cannot renew within
  `renew_deadline_s` of its last successful renewal stops counting itself as holder, and
  contenders wait `duration_s` of *their own* clock after they last saw the lease change before
  taking it, so no two replicas hold it at once (with clocks that run at about the same rate,
  whatever their offsets) even when the holder is partitioned or paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp

log = logging.getLogger(__name__)


class Fenced(Exception):
    """This replica does not hold the lease (any more): it must not act."""


class Lease(Protocol):
    lost: asyncio.Event

    async def acquire(self) -> None: ...

    def held(self) -> bool: ...

    async def release(self) -> None: ...


def fence(lease: Lease) -> Callable[[], None]:
    """A check to call before acting: raises Fenced when `lease` is not held."""

    def check() -> None:
        if not lease.held():
            raise Fenced("this replica does not hold the lease: it is not the active one")

    return check


# ---- one machine: flock ----------------------------------------------------------------
class FileLease:
    """An exclusive flock on `path`; the holder writes its identity into the file for people."""

    def __init__(self, path: Path, identity: str, poll_s: float = 0.1) -> None:
        self.path, self.identity, self.poll_s = path, identity, poll_s
        self.lost = asyncio.Event()
        self._fd: int | None = None
        self._watch: asyncio.Task[None] | None = None

    def _try_lock(self) -> int | None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if os.fstat(fd).st_ino != os.stat(self.path).st_ino:  # replaced while we locked
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.identity} since {datetime.now(UTC).isoformat()}\n".encode())
        return fd

    async def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        logged = False
        while (fd := self._try_lock()) is None:
            if not logged:
                log.info("lease %s is held by another replica: standing by", self.path)
                logged = True
            await asyncio.sleep(self.poll_s)
        self._fd = fd
        self._watch = asyncio.create_task(self._watch_file(), name="lease-file-watch")
        log.info("lease %s acquired by %s", self.path, self.identity)

    async def _watch_file(self) -> None:
        """The lock is on an inode: if someone removes or replaces the file, another replica
        could lock the new one, so this holder steps down."""
        while self._fd is not None:
            await asyncio.sleep(1.0)
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                log.error("lease file %s was removed or replaced: lease lost", self.path)
                self.lost.set()
                return

    def held(self) -> bool:
        return self._fd is not None and not self.lost.is_set()

    async def release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock


# ---- Kubernetes: coordination.k8s.io/v1 Lease ------------------------------------------
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesError(Exception):
    """The API server refused or failed a request."""


@dataclass
class KubernetesApi:
    """Just enough of a Kubernetes API client: JSON over HTTPS with the pod's service account
    token (read on every request: projected tokens are rotated)."""

    base_url: str
    token_file: Path | None = None
    ca_file: Path | None = None
    timeout_s: float = 2.0

    @classmethod
    def in_cluster(cls, host: str, port: str = "443") -> KubernetesApi:
        """The API server as a pod sees it: `host` and `port` are what kubelet puts in every
        pod's KUBERNETES_SERVICE_HOST / _PORT; the token and CA are the service account's."""
        if not host:
            raise KubernetesError(
                "not running in Kubernetes: KUBERNETES_SERVICE_HOST is not set "
                "(a Kubernetes lease needs the API server)"
            )
        if ":" in host:
            host = f"[{host}]"
        return cls(
            f"https://{host}:{port or '443'}", SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt"
        )

    async def request(
        self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        ssl_ctx: ssl.SSLContext | bool = True
        if self.ca_file is not None:
            ssl_ctx = ssl.create_default_context(cafile=str(self.ca_file))
        async with session.request(
            method,
            self.base_url + path,
            json=body,
            headers=headers,
            ssl=ssl_ctx if self.base_url.startswith("https") else False,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        ) as resp:
            data = await resp.json(content_type=None)
            return resp.status, data


def _micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLease:
    """A Lease object `name` in `namespace`, held by `identity` (the pod's name)."""

    def __init__(
        self,
        api: KubernetesApi,
        namespace: str,
        name: str,
        identity: str,
        duration_s: int = 3,
        renew_s: float = 1.0,
        renew_deadline_s: float = 2.0,
        retry_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_s < renew_deadline_s < duration_s:
            raise ValueError(
                f"a lease needs 0 < renew ({renew_s}s) < renew deadline ({renew_deadline_s}s) "
                f"< duration ({duration_s}s)"
            )
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.duration_s, self.renew_s = duration_s, renew_s
        self.renew_deadline_s, self.retry_s, self.clock = renew_deadline_s, retry_s, clock
        self.lost = asyncio.Event()
        self._valid_until = 0.0
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def held(self) -> bool:
        return not self.lost.is_set() and self.clock() < self._valid_until

    async def _try(self) -> bool:
        """One attempt to take or renew the lease; True when this replica holds it now."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = self.clock()
        status, body = await self.api.request(self._session, "GET", self.path)
        now = time.time()
        mine = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration_s,
            "renewTime": _micro_time(now),
        }
        if status == 404:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": mine | {"acquireTime": _micro_time(now), "leaseTransitions": 0},
            }
            collection = self.path.rsplit("/", 1)[0]
            status, body = await self.api.request(self._session, "POST", collection, lease)
            return self._won(status, body, started)
        if status != 200:
            raise KubernetesError(f"GET {self.path}: {status} {body}")
        spec = body.get("spec") or {}
        seen = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if seen != self._observed:
            self._observed, self._observed_at = seen, self.clock()
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self.duration_s
        if holder and holder != self.identity and self.clock() < self._observed_at + duration:
            return False  # someone else holds it and renewed within its duration
        new_spec = dict(spec) | mine
        if holder != self.identity:
            new_spec["acquireTime"] = _micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if holder else 0
            )
        body["spec"] = new_spec  # metadata.resourceVersion makes the update conditional
        status, body = await self.api.request(self._session, "PUT", self.path, body)
        return self._won(status, body, started)

    def _won(self, status: int, body: Any, started: float) -> bool:
        if status in (200, 201):
            self._valid_until = started + self.renew_deadline_s
            spec = body.get("spec") or {}
            self._observed = (
                spec.get("holderIdentity"),
                spec.get("renewTime"),
                spec.get("leaseTransitions"),
            )
            self._observed_at = self.clock()
            return True
        if status == 409:  # another replica wrote first (or created it first)
            return False
        raise KubernetesError(f"writing lease {self.name}: {status} {body}")

    async def _attempt(self) -> bool:
        try:
            return await self._try()
        except (aiohttp.ClientError, TimeoutError, KubernetesError, OSError) as exc:
            log.warning("lease %s: %s", self.name, exc)
            return False

    async def acquire(self) -> None:
        logged = False
        while not await self._attempt():
            if not logged:
                log.info("lease %s is held by another replica: standing by", self.name)
                logged = True
            await asyncio.sleep(self.retry_s)
        log.info("lease %s acquired by %s", self.name, self.identity)
        self._renewer = asyncio.create_task(self._renew(), name="lease-renew")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            if await self._attempt():
                continue
            if not self.held():
                log.error(
                    "lease %s not renewed within %.1fs: lost", self.name, self.renew_deadline_s
                )
                self.lost.set()
                return

    async def release(self) -> None:
        """Give the lease up so a standby takes it at once (a clean stop, e.g. a rollout)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        try:
            if self.held() and self._session is not None:
                status, body = await self.api.request(self._session, "GET", self.path)
                spec = (body.get("spec") or {}) if status == 200 else {}
                if spec.get("holderIdentity") == self.identity:
                    body["spec"] = spec | {"holderIdentity": None, "leaseDurationSeconds": 1}
                    await self.api.request(self._session, "PUT", self.path, body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("lease %s not released (it expires by itself): %s", self.name, exc)
        finally:
            self._valid_until = 0.0
            if self._session is not None:
                await self._session.close()
                self._session = None
