"""Wires the recorder: catalog database, recording store, announcer (Kafka), salvage and the
gRPC server. The recorder consumes no events, so it has no intake."""

from __future__ import annotations

import logging

from sqlalchemy.engine import make_url

from common.events import KEEP
from common.health import Readiness
from common.service import Stop, Wiring
from hotline.v1 import recorder_pb2_grpc
from recorder.announcer import Announcer
from recorder.catalog import Catalog, migrate, open_engine
from recorder.ingest import ANNOUNCE_WAIT_S, TAKEOVER_IDLE_S, Ingest
from recorder.notifier import RecorderNotifier
from recorder.salvage import INTERVAL_S, STALE_AFTER_S, Salvager
from recorder.servicer import RecorderService
from recorder.settings import RecorderSettings
from recorder.storage import LocalRecordingStore

log = logging.getLogger(__name__)

#: how long live streams may go on after a stop request before they are cut (and kept partial)
STOP_GRACE_S = 10.0


def _safe_url(url: str) -> str:
    """The database URL without its password, for logs and /readyz."""
    return make_url(url).render_as_string(hide_password=True)


async def main(
    settings: RecorderSettings,
    readiness: Readiness,
    *,
    salvage_stale_after_s: float = STALE_AFTER_S,
    salvage_interval_s: float = INTERVAL_S,
    announce_wait_s: float = ANNOUNCE_WAIT_S,
    stop_grace_s: float = STOP_GRACE_S,
    takeover_idle_s: float = TAKEOVER_IDLE_S,
) -> Stop:
    """Start the recorder and return the coroutine function that stops it.

    The keyword arguments are tuning knobs for tests; the service runs on the defaults.
    """
    url = settings.db_url("recorder")
    engine = open_engine(url)
    readiness.set("database", False, f"migrating {_safe_url(url)}")
    await migrate(engine)
    readiness.set("database", True, _safe_url(url))
    catalog = Catalog(engine)

    wiring = Wiring("recorder", settings, readiness)
    wiring.on_stop(engine.dispose, "catalog database")
    wiring.on_stop(catalog.close, "catalog writes")  # before the engine, after every writer

    store = LocalRecordingStore.from_settings(settings)
    store.root.mkdir(parents=True, exist_ok=True)

    # a RecordingReady the broker lost by restarting empty is published again
    announcer = Announcer(catalog, RecorderNotifier(wiring.publisher(keep=KEEP)))
    announcer.start()
    wiring.on_stop(announcer.stop, "announcer")

    ingest = Ingest(
        store,
        catalog,
        announcer,
        announce_wait_s=announce_wait_s,
        takeover_idle_s=takeover_idle_s,
    )
    salvager = Salvager(
        store,
        catalog,
        announcer,
        ingest,
        stale_after_s=salvage_stale_after_s,
        interval_s=salvage_interval_s,
    )
    salvager.start()
    wiring.on_stop(salvager.stop, "salvager")
    wiring.on_stop(ingest.drain, "recordings being stored")  # right after the server stopped

    wiring.servicer(recorder_pb2_grpc.add_RecorderServicer_to_server, RecorderService(ingest))
    stop = await wiring.start(grace_s=stop_grace_s, readiness_check="grpc")
    log.info(
        "recorder serving gRPC on %s:%d, recordings under %s",
        settings.bind_host,
        settings.grpc_ports["recorder"],
        store.root,
    )
    return stop
