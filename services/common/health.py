"""The side server every service runs: /metrics for Prometheus, /healthz and /readyz for Kubernetes.

Liveness says the process's event loop answers; readiness says each dependency (broker,
database, peers) is reachable, with the reason when it is not, so an operator reading
`/readyz` or the logs learns *what* is wrong.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class Readiness:
    """Named readiness checks, each set by the component that owns the dependency."""

    def __init__(self) -> None:
        self._checks: dict[str, tuple[bool, str]] = {}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        previous = self._checks.get(name)
        self._checks[name] = (ok, detail)
        if previous is not None and previous[0] != ok:
            log.log(
                logging.INFO if ok else logging.WARNING,
                "readiness %s: %s %s",
                name,
                "ready" if ok else "not ready",
                detail,
            )

    @property
    def ready(self) -> bool:
        return bool(self._checks) and all(ok for ok, _ in self._checks.values())

    def report(self) -> dict[str, dict[str, object]]:
        return {k: {"ok": ok, "detail": d} for k, (ok, d) in self._checks.items()}


class ReadinessCollector(Collector):
    """`hotline_ready{site}`: 1 while every readiness check passes, 0 otherwise (the alert
    "service not ready"; /readyz says which check and why)."""

    def __init__(self, readiness: Readiness, site: str) -> None:
        self.readiness, self.site = readiness, site

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("hotline_ready", "1 when the service is ready", labels=["site"])
        family.add_metric([self.site], 1 if self.readiness.ready else 0)
        yield family


def side_app(
    readiness: Readiness, registry: CollectorRegistry = REGISTRY, metrics_token: str = ""
) -> web.Application:
    """aiohttp app with the three operational endpoints. With `metrics_token`, /metrics
    answers only `Authorization: Bearer <token>` (401 otherwise); the probes stay open."""
    expected = f"Bearer {metrics_token}".encode()

    async def metrics(request: web.Request) -> web.Response:
        if metrics_token and not hmac.compare_digest(
            request.headers.get("Authorization", "").encode(), expected
        ):
            return web.json_response(
                {"error": "/metrics needs Authorization: Bearer <the metrics token>"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        status = 200 if readiness.ready else 503
        return web.json_response(
            {"ready": readiness.ready, "checks": readiness.report()}, status=status
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_side_server(
    readiness: Readiness, host: str, port: int, metrics_token: str = ""
) -> web.AppRunner:
    """Serve /metrics, /healthz, /readyz on host:port; returns the runner to clean up."""
    runner = web.AppRunner(side_app(readiness, metrics_token=metrics_token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
