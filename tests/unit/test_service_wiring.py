"""`common.service.Wiring`: the one start/stop sequence every service's app.py uses.

Publisher, consumers and the gRPC server are stand-ins that write to one journal, so the tests
see the exact order; one test serves a real gRPC servicer on a loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from common import rpc, service
from common.health import Readiness
from common.service import Wiring
from common.settings import Settings
from hotline.v1 import ivr_pb2, ivr_pb2_grpc
from ivr.servicer import IvrService
from tests import tls as test_tls

NAME = "acd"


class Journal(list[str]):
    pass


class FakePublisher:
    def __init__(
        self, journal: Journal, settings: Settings, source: str, readiness: Readiness
    ) -> None:
        self.journal, self.source = journal, source

    def start(self) -> None:
        self.journal.append(f"publisher {self.source} start")

    async def stop(self) -> None:
        self.journal.append("publisher stop")


class FakeConsumer:
    def __init__(
        self,
        journal: Journal,
        settings: Settings,
        group: str,
        topics: list[str],
        handler: object,
        readiness: Readiness,
    ) -> None:
        self.journal, self.group, self.topics, self.handler = journal, group, list(topics), handler

    def start(self) -> None:
        self.journal.append(f"consumer {self.group} start")

    async def stop(self) -> None:
        self.journal.append(f"consumer {self.group} stop")


class FakeServer:
    def __init__(self, journal: Journal, host: str, port: int) -> None:
        self.journal, self.host, self.port = journal, host, port
        self.servicers: list[object] = []

    async def start(self) -> None:
        self.journal.append(f"server {self.host}:{self.port} start {self.servicers}")

    async def stop(self, grace: float) -> None:
        self.journal.append(f"server stop grace={grace}")


class FakeChannel:
    def __init__(self, journal: Journal, target: str) -> None:
        self.journal, self.target = journal, target

    async def close(self, grace: float | None = None) -> None:
        self.journal.append(f"channel {self.target} close")


class Gauge:
    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("wiring_test_gauge", "a gauge", value=1)


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Journal:
    j = Journal()
    monkeypatch.setattr(service, "EventPublisher", lambda *a, **kw: FakePublisher(j, *a))
    monkeypatch.setattr(service, "EventConsumer", lambda *a, **kw: FakeConsumer(j, *a))
    servers: list[FakeServer] = []

    def make_server(host: str, port: int, tls: object, table: object) -> tuple[FakeServer, int]:
        assert tls is not None and table == ACD_SERVICER.CALLERS
        servers.append(FakeServer(j, host, port))
        return servers[-1], port

    monkeypatch.setattr(rpc, "server", make_server)
    monkeypatch.setattr(rpc, "channel", lambda target, tls, peer: FakeChannel(j, target))
    return j


def settings() -> Settings:
    return Settings(
        bind_host="127.0.0.2",
        grpc_ports={"acd": 6002, "gateway": 6001},
        grpc_hosts={"gateway": "gw.svc"},
        tls_dir=test_tls.cert_dir(),
    )


class Servicer(str):
    """A stand-in servicer (its name in the journal) with the table every servicer has."""

    CALLERS = rpc.callers("hotline.v1.Acd", {"GetAgent": {"crm"}})


ACD_SERVICER = Servicer("AcdService")


def add(servicer: str, server: FakeServer) -> None:
    server.servicers.append(servicer)


async def test_starts_consumers_then_server_and_stops_in_reverse(journal: Journal) -> None:
    registry = CollectorRegistry()
    w = Wiring(NAME, settings(), Readiness(), registry)
    w.publisher()
    w.channel("gateway")
    w.collector(Gauge())
    ticking = asyncio.Event()

    async def forever() -> None:
        ticking.set()
        try:
            await asyncio.Event().wait()
        finally:
            journal.append("task cancelled")

    w.task(forever(), "background")

    async def async_step() -> None:
        journal.append("dispatcher stop")

    w.on_stop(lambda: journal.append("sync step"), "sync step")
    w.on_stop(async_step, "dispatcher")
    w.consumer(["calls"], handler=print)
    w.consumer(["agents"], handler=print, group="acd-agents")
    w.servicer(add, ACD_SERVICER)
    assert journal == ["publisher acd start"]  # consumers wait for start()

    stop = await w.start()
    await ticking.wait()
    assert registry.get_sample_value("wiring_test_gauge") == 1
    assert journal[1:] == [
        "consumer acd start",
        "consumer acd-agents start",
        "server 127.0.0.2:6002 start ['AcdService']",
    ]
    del journal[:]

    await stop()
    assert journal == [
        "server stop grace=2.0",  # no command comes in
        "consumer acd-agents stop",
        "consumer acd stop",  # no event comes in
        "dispatcher stop",
        "sync step",  # then the rest, last declared first
        "task cancelled",
        "channel gw.svc:6001 close",
        "publisher stop",  # after everything that publishes
    ]
    assert registry.get_sample_value("wiring_test_gauge") is None  # unregistered


async def test_a_failing_step_is_logged_and_the_rest_still_stop(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    w = Wiring(NAME, settings(), Readiness())
    w.publisher()

    def broken() -> None:
        raise RuntimeError("disk gone")

    w.on_stop(broken, "catalog")
    w.on_stop(lambda: journal.append("last declared"), "last")
    stop = await w.start()
    with caplog.at_level(logging.ERROR):
        await stop()
        await stop()  # a second stop does nothing
    assert journal[1:] == ["last declared", "publisher stop"]
    assert "acd: stopping catalog failed" in caplog.text and "disk gone" in caplog.text


async def test_readiness_check_follows_the_server(journal: Journal) -> None:
    readiness = Readiness()
    w = Wiring(NAME, settings(), readiness)
    w.servicer(add, ACD_SERVICER)
    w.on_stop(lambda: journal.append(f"after server, ready={readiness.ready}"), "probe")
    stop = await w.start(grace_s=7.5, readiness_check="grpc")
    assert readiness.report()["grpc"] == {"ok": True, "detail": "127.0.0.2:6002"}
    del journal[:]
    await stop()
    assert readiness.report()["grpc"] == {"ok": False, "detail": "stopping"}
    assert journal == ["server stop grace=7.5", "after server, ready=False"]


async def test_a_failed_start_stops_what_was_declared(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_port(host: str, port: int, tls: object, table: object) -> FakeServer:
        raise OSError(f"cannot bind gRPC server to {host}:{port}")

    monkeypatch.setattr(rpc, "server", no_port)
    w = Wiring(NAME, settings(), Readiness())
    w.publisher()
    w.consumer(["calls"], handler=print)
    w.servicer(add, ACD_SERVICER)
    with pytest.raises(OSError, match="127.0.0.2:6002"):
        await w.start()
    assert journal == [
        "publisher acd start",
        "consumer acd start",
        "consumer acd stop",
        "publisher stop",
    ]


async def test_no_servicer_no_server(journal: Journal) -> None:
    w = Wiring(NAME, settings(), Readiness())
    w.consumer(["calls"], handler=print)
    stop = await w.start(readiness_check="grpc")
    await stop()
    assert journal == ["consumer acd start", "consumer acd stop"]


async def test_drain_runs_before_the_stop_and_reddens_readiness(journal: Journal) -> None:
    readiness = Readiness()
    w = Wiring(NAME, settings(), readiness)
    w.servicer(add, ACD_SERVICER)

    async def live_calls(budget_s: float) -> None:
        journal.append(f"drain {budget_s:g}s ready={readiness.ready}")
        await asyncio.sleep(0.01)

    async def stuck(budget_s: float) -> None:
        await asyncio.sleep(3600)

    w.on_drain(live_calls, "calls")
    w.on_drain(stuck, "stuck")
    stop = await w.start(readiness_check="grpc")
    del journal[:]
    await stop(0.2)  # SIGTERM: drain for at most 0.2 s, then the usual stop
    assert journal[0] == "drain 0.2s ready=False"
    assert readiness.report()["draining"]["ok"] is False
    assert journal[1:] == ["server stop grace=2.0"]


async def test_no_drain_on_an_immediate_stop(journal: Journal) -> None:
    w = Wiring(NAME, settings(), Readiness())
    w.on_drain(lambda budget_s: asyncio.sleep(3600), "never")
    stop = await w.start()
    await asyncio.wait_for(stop(), 2)  # SIGINT: no drain


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Flows(ivr_pb2_grpc.IvrServicer):
    CALLERS = IvrService.CALLERS

    async def ListFlows(self, request, context):  # noqa: N802, ANN001
        return ivr_pb2.ListFlowsReply(flows=[ivr_pb2.FlowInfo(dnis="10000", name="main")])


async def test_serves_the_servicers_on_the_service_port_until_stopped() -> None:
    port = free_port()
    ivr = Settings(
        grpc_ports={"ivr": port}, grpc_hosts={"ivr": "127.0.0.1"}, tls_dir=test_tls.cert_dir()
    )
    w = Wiring("ivr", ivr, Readiness())
    w.servicer(ivr_pb2_grpc.add_IvrServicer_to_server, Flows())
    stop = await w.start()
    channel = test_tls.channel("crm", "ivr", port)
    try:
        stub = ivr_pb2_grpc.IvrStub(channel)
        reply = await stub.ListFlows(ivr_pb2.ListFlowsRequest(), timeout=5)
        assert [(f.dnis, f.name) for f in reply.flows] == [("10000", "main")]
        await stop()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListFlows(ivr_pb2.ListFlowsRequest(), timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


def test_a_servicer_without_a_callers_table_is_refused(journal: Journal) -> None:
    w = Wiring(NAME, settings(), Readiness())
    with pytest.raises(TypeError, match="str declares no CALLERS table"):
        w.servicer(add, "AcdService")


def test_missing_certificates_stop_the_service_naming_the_file(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(rpc.TlsError, match=f"CA {tmp_path}/ca.crt: No such file"):
        Wiring(NAME, Settings(tls_dir=tmp_path), Readiness())
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(rpc.TlsError, match="ca.crt is not a PEM CA"):
        Wiring(NAME, Settings(tls_dir=tmp_path), Readiness())


def test_the_development_switch_is_plain_text_and_says_so(
    caplog: pytest.LogCaptureFixture, tmp_path
) -> None:  # noqa: ANN001
    with caplog.at_level(logging.WARNING):
        w = Wiring(NAME, Settings(tls_dir=tmp_path, grpc_insecure=True), Readiness())
    assert w.tls is None
    assert "HOTLINE_GRPC_INSECURE is set: gRPC is plain text" in caplog.text


async def test_a_consumer_may_have_its_own_fetch_wait() -> None:
    """`fetch_wait_ms` reaches the Kafka client; without it the service-wide setting does."""
    s = dataclasses.replace(settings(), kafka_fetch_wait_ms=20)
    w = Wiring(NAME, s, Readiness(), CollectorRegistry())
    own = w.consumer(["calls"], handler=print, group="crm", fetch_wait_ms=100)
    shared = w.consumer(["calls"], handler=print, group="ivr")
    assert (own.fetch_wait_ms, shared.fetch_wait_ms) == (100, 20)
    assert own._make()._fetch_max_wait_ms == 100
    assert shared._make()._fetch_max_wait_ms == 20
