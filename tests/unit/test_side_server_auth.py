"""The side server's /metrics behind a bearer token (issue 11: /metrics answered anyone; the
gateway's is on the node's addresses in Kubernetes). The probes stay open for the kubelet."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from common.health import Readiness, side_app

TOKEN = "s3cret-metrics-token-0123"


async def client(token: str) -> TestClient:
    registry = CollectorRegistry()
    Counter("probe_total", "a counter", registry=registry).inc()
    readiness = Readiness()
    readiness.set("x", True)
    return TestClient(TestServer(side_app(readiness, registry, metrics_token=token)))


async def test_metrics_need_the_token_and_probes_do_not() -> None:
    async with await client(TOKEN) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await c.get("/metrics", headers=headers)
            assert response.status == 401, headers
            assert "needs Authorization: Bearer" in (await response.json())["error"]
            assert response.headers["WWW-Authenticate"] == "Bearer"
        response = await c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 200 and "probe_total 1.0" in await response.text()
        assert (await c.get("/healthz")).status == 200
        assert (await c.get("/readyz")).status == 200


async def test_without_a_token_metrics_are_open_as_before() -> None:
    async with await client("") as c:
        response = await c.get("/metrics")
        assert response.status == 200 and "probe_total" in await response.text()
