"""Wires the ACD: lease (standby until held), rebuild, dispatcher, gRPC API, events in (`calls`,
followed from the rebuild on, no consumer group) and out, reconciliation with the gateway, the
topic watch, KPI collector."""

from __future__ import annotations

from functools import partial

from acd.dispatcher import Dispatcher
from acd.intake import AcdIntake
from acd.kpis import QueueKpiCollector
from acd.notifier import AcdNotifier
from acd.recovery import Recovery, TopicWatch
from acd.replica import CHECK, Replica, lease_from
from acd.servicer import AcdService
from acd.settings import AcdSettings
from common.events import ensure_topics
from common.health import Readiness
from common.lease import fence
from common.replay import TopicSizes, TopicTail
from common.service import Stop, Wiring
from hotline.v1 import acd_pb2_grpc, gateway_pb2_grpc


async def main(settings: AcdSettings, readiness: Readiness) -> Stop:
    wiring = Wiring("acd", settings, readiness)
    publisher = wiring.publisher()
    gateway = gateway_pb2_grpc.CallControlStub(wiring.channel("gateway"))
    lease = lease_from(settings)
    replica = Replica(lease, readiness)
    await replica.become_active()  # a standby waits here, red in /readyz
    wiring.on_stop(lease.release, "lease")
    notifier = AcdNotifier(publisher, fence=fence(lease))
    wiring.on_stop(notifier.stop, "acd outbox")  # after the dispatcher, before the lease
    dispatcher = Dispatcher(
        notifier,
        gateway,
        list(settings.queues),
        settings.site,
        settings.ring_timeout_s,
        settings.wrap_up_s,
        fence=fence(lease),
        short_abandon_s=settings.short_abandon_s,
    )
    calls = TopicTail(
        settings.kafka_bootstrap,
        "calls",
        AcdIntake(dispatcher).handle,
        readiness,
        "acd",
        fetch_wait_ms=settings.acd_fetch_wait_ms,
    )
    recovery = Recovery(
        settings.kafka_bootstrap,
        gateway,
        dispatcher,
        readiness,
        settings.max_wait_s,
        settings.reconcile_s,
        calls.mark,
    )
    await recovery.run()
    dispatcher.start()
    wiring.on_stop(dispatcher.stop, "dispatcher")
    calls.start()
    wiring.on_stop(calls.stop, "calls tail")
    wiring.task(replica.watch(), "acd-lease-watch")
    wiring.task(recovery.keep_reconciling(), "acd-reconcile")
    sizes = TopicSizes(settings.kafka_bootstrap)
    wiring.on_stop(sizes.stop, "topic sizes")
    restate = {"agents": dispatcher.restate_agents, "queues": dispatcher.restate_queues}
    create = partial(ensure_topics, settings.kafka_bootstrap)
    # a broker that lost the ACD's topics may have lost `calls` too: the tail reads it again
    # from its beginning if so (its own look misses a new topic grown past its position)
    watch = TopicWatch(sizes, notifier, restate, create, after_loss=calls.rewind_if_recreated)
    wiring.task(watch.run(), "acd-topic-watch")
    wiring.collector(QueueKpiCollector(dispatcher, settings.site))
    wiring.servicer(acd_pb2_grpc.add_AcdServicer_to_server, AcdService(dispatcher))
    return await wiring.start(readiness_check=CHECK)
