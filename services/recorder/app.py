"""Wires the recorder: catalog database, recording store, Kafka publisher and the gRPC server."""
from __future__ import annotations

import logging

from hotline.v1 import recorder_pb2_grpc
from sqlalchemy.engine import make_url

from common import rpc
from common.events import EventPublisher
from common.health import Readiness
from common.service import Stop
from recorder.announcer import Announcer
from recorder.catalog import Catalog, migrate, open_engine
from recorder.ingest import ANNOUNCE_WAIT_S, IngestService
from recorder.salvage import INTERVAL_S, STALE_AFTER_S, Salvager
from recorder.settings import RecorderSettings
from recorder.storage import LocalRecordingStore

log = logging.getLogger(__name__)

#: how long live streams may go on after a stop request before they are cut (and kept partial)
STOP_GRACE_S = 10.0


def _safe_url(url: str) -> str:
    """The database URL without its password, for logs and /readyz."""
    return make_url(url).render_as_string(hide_password=True)


async def main(settings: RecorderSettings, readiness: Readiness, *,
               salvage_stale_after_s: float = STALE_AFTER_S,
               salvage_interval_s: float = INTERVAL_S,
               announce_wait_s: float = ANNOUNCE_WAIT_S,
               stop_grace_s: float = STOP_GRACE_S) -> Stop:
    """Start the recorder and return the coroutine function that stops it.

    The keyword arguments are tuning knobs for tests; the service runs on the defaults.
    """
    url = settings.db_url("recorder")
    engine = open_engine(url)
    readiness.set("database", False, f"migrating {_safe_url(url)}")
    await migrate(engine)
    readiness.set("database", True, _safe_url(url))
    catalog = Catalog(engine)

    store = LocalRecordingStore.from_settings(settings)
    store.root.mkdir(parents=True, exist_ok=True)

    publisher = EventPublisher(settings, "recorder", readiness)
    publisher.start()
    announcer = Announcer(catalog, publisher)
    announcer.start()

    ingest = IngestService(store, catalog, announcer, announce_wait_s=announce_wait_s)
    salvager = Salvager(store, catalog, announcer, ingest, stale_after_s=salvage_stale_after_s,
                        interval_s=salvage_interval_s)
    salvager.start()

    port = settings.grpc_ports["recorder"]
    server = rpc.server(settings.bind_host, port)
    recorder_pb2_grpc.add_RecorderServicer_to_server(ingest, server)
    await server.start()
    readiness.set("grpc", True, f"{settings.bind_host}:{port}")
    log.info("recorder serving gRPC on %s:%d, recordings under %s", settings.bind_host, port,
             store.root)

    async def stop() -> None:
        readiness.set("grpc", False, "stopping")
        await server.stop(stop_grace_s)
        await ingest.drain()
        await salvager.stop()
        await announcer.stop()
        await publisher.stop()
        await engine.dispose()

    return stop
