"""Wiring of the CRM service: database, gRPC `Crm`, event consumer, web desktop, ACD, gateway
and recorder clients."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from common.health import Readiness
from common.service import Stop, Wiring
from crm.agent_control import AgentControl
from crm.api import ACD, CDRS, add_routes
from crm.app_keys import GATEWAY, RECORDER
from crm.auth import ADDRESSES, DB, HASHES, PROXIES, THROTTLE, access_control
from crm.call_commands import CallCommands
from crm.cdr_store import CdrStore
from crm.csrf import same_origin
from crm.db import Database, describe, watch
from crm.desk import HUB, DeskHub, websocket
from crm.desk_config import DESK, DeskConfig
from crm.dialplan import parse_table
from crm.intake import EventIntake
from crm.recording_archive import RecordingArchive
from crm.rest import json_errors
from crm.seed import seed
from crm.servicer import CrmService
from crm.settings import CrmSettings
from crm.supervision import SUPERVISION, Supervision
from crm.throttle import AddressLimiter, HashGate, LoginThrottle
from hotline.v1 import crm_pb2_grpc

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
TOPICS = ("calls", "queues", "agents", "recordings")
DB_RETRY_S = 2.0

_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


async def _index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", _CSP)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    else:
        response.headers.setdefault("Cache-Control", "no-cache")


def web_app(
    db: Database,
    control: AgentControl,
    cdrs: CdrStore,
    hub: DeskHub,
    throttle: LoginThrottle | None = None,
    *,
    gateway: CallCommands,
    recorder: RecordingArchive,
    config: DeskConfig | None = None,
    addresses: AddressLimiter | None = None,
    hashes: HashGate | None = None,
    trusted_proxies: tuple[str, ...] = (),
    supervision: Supervision | None = None,
) -> web.Application:
    """The browser-facing app: REST under /api, the websocket at /ws, the desktop at /."""
    app = web.Application(middlewares=[json_errors, same_origin, access_control])
    app[DB] = db
    app[THROTTLE] = throttle or LoginThrottle()
    app[ADDRESSES] = addresses or AddressLimiter()
    app[HASHES] = hashes or HashGate()
    app[PROXIES] = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
    app[ACD] = control
    app[GATEWAY] = gateway
    app[RECORDER] = recorder
    app[DESK] = config or DeskConfig()
    app[CDRS] = cdrs
    app[HUB] = hub
    app[SUPERVISION] = supervision or Supervision(control)
    add_routes(app)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/", _index)
    app.router.add_static("/static", WEB_DIR)
    app.on_response_prepare.append(_security_headers)

    async def close_sockets(_: web.Application) -> None:
        await hub.close_all()

    app.on_shutdown.append(close_sockets)
    return app


async def open_database(url: str, readiness: Readiness) -> Database:
    """Connect, migrate to head and seed; retry while the database is unreachable."""
    db = Database(url)
    where = describe(url)
    attempt = 0
    while True:
        attempt += 1
        try:
            async with db.exclusive():
                await db.migrate()
                await seed(db)
        except (SQLAlchemyError, OSError) as exc:
            readiness.set("database", False, f"{where}: {exc!r}")
            log.warning(
                "database %s not usable, retrying in %.0f s (attempt %d): %r",
                where,
                DB_RETRY_S,
                attempt,
                exc,
            )
            await asyncio.sleep(DB_RETRY_S)
            continue
        readiness.set("database", True, where)
        log.info("database %s migrated and ready", where)
        return db


async def main(settings: CrmSettings, readiness: Readiness) -> Stop:
    """Start every part of the CRM; returns the coroutine function that stops them."""
    readiness.set("database", False, "connecting")
    db = await open_database(settings.db_url("crm"), readiness)
    wiring = Wiring("crm", settings, readiness)
    wiring.on_stop(db.dispose, "database")
    wiring.task(watch(db, readiness), "crm-db-watch")
    control = AgentControl(wiring.channel("acd"))
    gateway = CallCommands(wiring.channel("gateway"))
    recorder = RecordingArchive(wiring.channel("recorder"))
    config = DeskConfig(
        acw_s=settings.acw_s,
        not_ready_reasons=settings.not_ready_reasons,
        dial_table=parse_table(settings.dial_classes),
        ring_timeout_s=settings.dial_ring_timeout_s,
    )
    cdrs = CdrStore(db)
    hub = DeskHub(db, cdrs)

    app = web_app(
        db,
        control,
        cdrs,
        hub,
        gateway=gateway,
        recorder=recorder,
        config=config,
        addresses=AddressLimiter(settings.login_attempts_per_minute),
        hashes=HashGate(settings.login_max_hashes),
        trusted_proxies=settings.trusted_proxies,
        supervision=Supervision(control, gateway),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    wiring.on_stop(runner.cleanup, "web desktop")
    await web.TCPSite(runner, settings.bind_host, settings.http_port).start()

    intake = EventIntake(hub, cdrs)
    wiring.consumer(
        TOPICS,
        intake.handle,
        batch_handler=intake.handle_batch,
        fetch_wait_ms=settings.crm_fetch_wait_ms,
    )
    wiring.servicer(crm_pb2_grpc.add_CrmServicer_to_server, CrmService(db))
    stop = await wiring.start()
    log.info(
        "agent desktop on http://%s:%d/ ; gRPC Crm on %s:%d ; ACD at %s",
        settings.bind_host,
        settings.http_port,
        settings.bind_host,
        settings.grpc_ports["crm"],
        settings.grpc_target("acd"),
    )
    return stop
