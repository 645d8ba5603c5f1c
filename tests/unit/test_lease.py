"""Leases (common.lease): two contenders, one wins; loss and takeover; fencing.

The file lease runs on the real kernel (flock, a real process killed with SIGKILL). No
Kubernetes API server is available on this machine, so the Kubernetes lease runs against a
small fake of the API server's Lease endpoints (GET, POST, PUT with resourceVersion
conflicts and bearer tokens), which can cut one client off to play a partition.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from common.lease import (
    FileLease,
    KubernetesApi,
    KubernetesLease,
)


# ---- file lease ----------------------------------------------------------------------------
async def test_file_lease_one_of_two_wins_and_the_other_takes_over_on_release(
    tmp_path: Path,
) -> None:
    path = tmp_path / "acd.lease"
    a, b = FileLease(path, "a", poll_s=0.02), FileLease(path, "b", poll_s=0.02)
    await a.acquire()
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.2)
    assert a.held() and not b.held() and not waiting.done()
    assert path.read_text().startswith("a since ")
    await a.release()
    await asyncio.wait_for(waiting, 1)
    assert b.held() and not a.held()
    assert path.read_text().startswith("b since ")
    await b.release()


async def test_file_lease_passes_within_a_poll_when_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "acd.lease"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        standby = FileLease(path, "standby", poll_s=0.05)
        waiting = asyncio.create_task(standby.acquire())
        await asyncio.sleep(0.3)
        assert not waiting.done() and not standby.held()
        holder.kill()  # SIGKILL: no chance to unlock; the kernel drops the lock
        killed = time.monotonic()
        await asyncio.wait_for(waiting, 2)
        assert time.monotonic() - killed < 0.5
        assert standby.held()
        await standby.release()
    finally:
        holder.kill()
        holder.wait()


async def test_file_lease_is_lost_when_its_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "acd.lease"
    lease = FileLease(path, "a")
    await lease.acquire()
    path.unlink()
    path.write_text("someone else's\n")
    await asyncio.wait_for(lease.lost.wait(), 3)
    assert not lease.held()
    await lease.release()


# ---- Kubernetes lease against a fake API server --------------------------------------------
class FakeApiServer:
    """The Lease endpoints of coordination.k8s.io/v1, with optimistic concurrency."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.cut_off: set[str] = set()  # tokens whose requests fail (a network partition)
        self.tokens: set[str] = set()

    def _auth(self, request: web.Request) -> str:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            raise web.HTTPUnauthorized(text='{"kind":"Status","code":401}')
        if token in self.cut_off:
            raise web.HTTPServiceUnavailable(text='{"kind":"Status","code":503}')
        return token

    async def get(self, request: web.Request) -> web.Response:
        self._auth(request)
        lease = self.leases.get((request.match_info["ns"], request.match_info["name"]))
        if lease is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(lease)

    def _stamp(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        lease["metadata"]["resourceVersion"] = str(self.version)
        return lease

    async def create(self, request: web.Request) -> web.Response:
        self._auth(request)
        body = await request.json()
        key = (request.match_info["ns"], body["metadata"]["name"])
        if key in self.leases:
            return web.json_response({"kind": "Status", "reason": "AlreadyExists"}, status=409)
        self.leases[key] = self._stamp(body)
        return web.json_response(body, status=201)

    async def replace(self, request: web.Request) -> web.Response:
        self._auth(request)
        body = await request.json()
        key = (request.match_info["ns"], request.match_info["name"])
        current = self.leases.get(key)
        if current is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return web.json_response({"kind": "Status", "reason": "Conflict"}, status=409)
        self.leases[key] = self._stamp(body)
        return web.json_response(body)

    def app(self) -> web.Application:
        app = web.Application()
        base = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        app.router.add_get(base + "/{name}", self.get)
        app.router.add_post(base, self.create)
        app.router.add_put(base + "/{name}", self.replace)
        return app


@pytest.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def contender(fake: FakeApiServer, url: str, tmp_path: Path, name: str) -> KubernetesLease:
    token = tmp_path / f"{name}.token"
    token.write_text(f"token-{name}\n")
    fake.tokens.add(f"token-{name}")
    return KubernetesLease(
        KubernetesApi(url, token_file=token, timeout_s=0.3),
        "hotline",
        "hotline-acd",
        name,
        duration_s=1,
        renew_s=0.15,
        renew_deadline_s=0.5,
        retry_s=0.05,
    )


async def test_kubernetes_lease_one_of_two_wins_and_a_partitioned_holder_is_fenced(
    apiserver: tuple[FakeApiServer, str], tmp_path: Path
) -> None:
    fake, url = apiserver
    a, b = contender(fake, url, tmp_path, "pod-a"), contender(fake, url, tmp_path, "pod-b")
    await a.acquire()
    standby = asyncio.create_task(b.acquire())
    overlap = False
    a_fenced_at = b_held_at = None
    deadline = time.monotonic() + 1.5  # several renewals: a keeps it, b waits
    while time.monotonic() < deadline:
        overlap |= a.held() and b.held()
        await asyncio.sleep(0.01)
    assert a.held() and not b.held() and not standby.done()
    spec = fake.leases[("hotline", "hotline-acd")]["spec"]
    assert spec["holderIdentity"] == "pod-a" and spec["leaseDurationSeconds"] == 1

    fake.cut_off.add("token-pod-a")  # a can no longer renew (partitioned or paused)
    cut = time.monotonic()
    while not standby.done():
        overlap |= a.held() and b.held()
        if a_fenced_at is None and not a.held():
            a_fenced_at = time.monotonic()
        await asyncio.sleep(0.005)
    b_held_at = time.monotonic()
    assert not overlap, "two replicas held the lease at once"
    assert a_fenced_at is not None and a_fenced_at - cut <= 0.5 + 0.35  # renew deadline
    assert a_fenced_at < b_held_at
    # the standby waited the lease duration after the holder's last renewal (at most one
    # renew interval before the cut, seen at most one retry later)
    assert b_held_at - cut >= 1.0 - 0.15 - 0.05
    assert b_held_at - cut < 2.5
    await asyncio.wait_for(a.lost.wait(), 1)
    spec = fake.leases[("hotline", "hotline-acd")]["spec"]
    assert spec["holderIdentity"] == "pod-b" and spec["leaseTransitions"] == 1
    await a.release()
    await b.release()


async def test_kubernetes_lease_released_on_a_clean_stop_passes_at_once(
    apiserver: tuple[FakeApiServer, str], tmp_path: Path
) -> None:
    fake, url = apiserver
    a, b = contender(fake, url, tmp_path, "pod-a"), contender(fake, url, tmp_path, "pod-b")
    await a.acquire()
    standby = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.3)
    await a.release()
    released = time.monotonic()
    assert not a.held()
    await asyncio.wait_for(standby, 1)
    assert time.monotonic() - released < 0.3, "no need to wait out the duration"
    await b.release()


async def test_kubernetes_lease_without_credentials_never_holds(
    apiserver: tuple[FakeApiServer, str], tmp_path: Path
) -> None:
    fake, url = apiserver
    token = tmp_path / "t"
    token.write_text("wrong")
    lease = KubernetesLease(
        KubernetesApi(url, token_file=token), "hotline", "x", "pod", 1, 0.15, 0.5, 0.05
    )
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(lease.acquire(), 0.5)
    assert not lease.held()
    await lease.release()


def test_kubernetes_lease_timings_must_nest() -> None:
    api = KubernetesApi("http://x")
    with pytest.raises(ValueError, match="renew deadline"):
        KubernetesLease(api, "ns", "n", "id", duration_s=2, renew_s=1, renew_deadline_s=3)


def test_in_cluster_config_needs_the_api_server() -> None:
    from common.lease import KubernetesError

    with pytest.raises(KubernetesError, match="KUBERNETES_SERVICE_HOST"):
        KubernetesApi.in_cluster("")
    assert KubernetesApi.in_cluster("10.96.0.1", "443").base_url == "https://10.96.0.1:443"
    assert KubernetesApi.in_cluster("fd00::1", "").base_url == "https://[fd00::1]:443"
