"""Service identity on gRPC (issue 11): every channel is mutual TLS and each method names the
services allowed to call it. The probes of the issue, against real gRPC servers on loopback
with the services' own method tables: anonymous and wrongly-certified clients are refused at
the handshake, and every method refuses every service its table does not name with
PERMISSION_DENIED naming the caller and the method."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from acd.servicer import AcdService
from common import certs, rpc
from common.settings import SERVICES
from crm.servicer import CrmService
from gateway.servicer import CallControlServicer
from hotline.v1 import (
    acd_pb2,
    acd_pb2_grpc,
    crm_pb2,
    crm_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    ivr_pb2,
    ivr_pb2_grpc,
    recorder_pb2,
    recorder_pb2_grpc,
)
from ivr.servicer import IvrService
from recorder.servicer import RecorderService
from tests import tls as test_tls

# service -> (its servicer class with the CALLERS table, generated base, add function, proto)
SERVED: dict[str, tuple[Any, Any, Any, Any, str]] = {
    "gateway": (
        CallControlServicer,
        gateway_pb2_grpc.CallControlServicer,
        gateway_pb2_grpc.add_CallControlServicer_to_server,
        gateway_pb2,
        "CallControl",
    ),
    "acd": (
        AcdService,
        acd_pb2_grpc.AcdServicer,
        acd_pb2_grpc.add_AcdServicer_to_server,
        acd_pb2,
        "Acd",
    ),
    "ivr": (
        IvrService,
        ivr_pb2_grpc.IvrServicer,
        ivr_pb2_grpc.add_IvrServicer_to_server,
        ivr_pb2,
        "Ivr",
    ),
    "crm": (
        CrmService,
        crm_pb2_grpc.CrmServicer,
        crm_pb2_grpc.add_CrmServicer_to_server,
        crm_pb2,
        "Crm",
    ),
    "recorder": (
        RecorderService,
        recorder_pb2_grpc.RecorderServicer,
        recorder_pb2_grpc.add_RecorderServicer_to_server,
        recorder_pb2,
        "Recorder",
    ),
}

#: the method table of issue 11, written out once more by hand so a change to a servicer's
#: CALLERS has to be made on purpose in two places.
EXPECTED = {
    "/hotline.v1.CallControl/Answer": {"ivr", "acd"},
    "/hotline.v1.CallControl/Play": {"ivr", "acd"},
    "/hotline.v1.CallControl/StopPlay": {"ivr", "acd"},
    "/hotline.v1.CallControl/CollectDigits": {"ivr", "acd"},
    "/hotline.v1.CallControl/ConnectToEndpoint": {"ivr", "acd"},
    "/hotline.v1.CallControl/Originate": {"ivr", "acd"},
    "/hotline.v1.CallControl/Hangup": {"ivr", "acd", "crm"},  # crm: a supervisor's force release
    "/hotline.v1.CallControl/ListCalls": {"ivr", "acd"},
    "/hotline.v1.CallControl/AdoptOrphans": {"ivr"},  # the IVR's heartbeat
    **{
        f"/hotline.v1.CallControl/{m}": {"crm"}  # the desk's call control
        for m in (
            "Hold",
            "Resume",
            "Transfer",
            "Consult",
            "EndConsult",
            "AddParty",
            "RemoveParty",
            "Monitor",
            "StopMonitor",
            "Mute",
            "SendDigits",
            "DialOut",
        )
    },
    "/hotline.v1.Acd/Enqueue": {"ivr"},
    "/hotline.v1.Acd/Login": {"crm"},
    "/hotline.v1.Acd/Logout": {"crm"},
    "/hotline.v1.Acd/SetState": {"crm"},
    "/hotline.v1.Acd/GetAgent": {"crm"},
    "/hotline.v1.Acd/GetQueue": {"crm", "ivr"},
    "/hotline.v1.Acd/Requeue": {"gateway"},  # a transfer to a queue
    "/hotline.v1.Acd/ListAgents": {"crm"},  # the supervisor board (and the desk's directory)
    "/hotline.v1.Acd/ListQueues": {"crm"},
    "/hotline.v1.Ivr/ListFlows": {"crm"},
    "/hotline.v1.Crm/LookupCustomer": {"ivr"},
    "/hotline.v1.Recorder/Ingest": {"gateway"},
    "/hotline.v1.Recorder/Fetch": {"crm"},
}


def methods(service: str) -> list[tuple[str, bool]]:
    """(method path, client streaming) of every method of the service's proto."""
    _, _, _, pb2, name = SERVED[service]
    desc = pb2.DESCRIPTOR.services_by_name[name]
    return [(f"/{desc.full_name}/{m.name}", m.client_streaming) for m in desc.methods]


def test_every_method_of_every_service_names_its_callers() -> None:
    table = {}
    for service, (servicer, *_rest) in SERVED.items():
        own = {path for path, _ in methods(service)}
        assert set(servicer.CALLERS) == own, f"{service}: CALLERS must list exactly {own}"
        table.update({k: set(v) for k, v in servicer.CALLERS.items()})
    assert table == EXPECTED


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, int]]:
    """Each service's gRPC server with the generated base servicer (every method answers
    UNIMPLEMENTED once authorized) behind its real CALLERS table."""
    started: dict[str, int] = {}
    running = []
    for service, (servicer, base, add, _pb2, _name) in SERVED.items():
        srv, port = test_tls.server(service, add, base(), servicer.CALLERS)
        await srv.start()
        running.append(srv)
        started[service] = port
    yield started
    for srv in running:
        await srv.stop(None)


async def invoke(channel: grpc.aio.Channel, path: str, streaming: bool) -> grpc.StatusCode:
    """Call `path` with an empty request; the status code it ends with."""
    ident = lambda b: b  # noqa: E731 - raw bytes in and out
    try:
        if streaming:
            call = channel.stream_unary(path, request_serializer=ident, response_deserializer=ident)

            async def one() -> AsyncIterator[bytes]:
                yield b""

            await call(one(), timeout=5)
        else:
            await channel.unary_unary(path, request_serializer=ident, response_deserializer=ident)(
                b"", timeout=5
            )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            assert exc.details() is not None and path in exc.details()
        return exc.code()
    return grpc.StatusCode.OK


async def test_each_method_admits_only_the_services_its_table_names(
    servers: dict[str, int],
) -> None:
    refused: list[str] = []
    for service, port in servers.items():
        for path, streaming in methods(service):
            for caller in SERVICES:
                async with test_tls.channel(caller, service, port) as channel:
                    code = await invoke(channel, path, streaming)
                if caller in EXPECTED[path]:
                    # through the interceptor to the (unimplemented) servicer
                    assert code == grpc.StatusCode.UNIMPLEMENTED, (caller, path, code)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (caller, path, code)
                    refused.append(f"{caller} {path}")
    assert "crm /hotline.v1.CallControl/ConnectToEndpoint" in refused  # the issue's probes
    assert "ivr /hotline.v1.Recorder/Ingest" in refused
    assert "ivr /hotline.v1.Acd/SetState" in refused


async def test_the_refusal_names_the_caller_and_the_method(servers: dict[str, int]) -> None:
    async with test_tls.channel("ivr", "acd", servers["acd"]) as channel:
        stub = acd_pb2_grpc.AcdStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SetState(acd_pb2.SetStateRequest(agent_id="agent5"), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == (
        "service ivr may not call /hotline.v1.Acd/SetState (allowed: crm)"
    )


async def test_an_anonymous_plain_text_client_is_refused(servers: dict[str, int]) -> None:
    for service, port in servers.items():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for path, streaming in methods(service):
                assert await invoke(channel, path, streaming) == grpc.StatusCode.UNAVAILABLE


async def test_a_tls_client_without_a_certificate_is_refused(servers: dict[str, int]) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=test_tls.tls("crm").ca)
    options = [("grpc.ssl_target_name_override", "gateway")]
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{servers['gateway']}", creds, options=options
    ) as channel:
        code = await invoke(channel, "/hotline.v1.CallControl/Hangup", False)
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(
    servers: dict[str, int], tmp_path: Path
) -> None:
    certs.ensure(tmp_path, ["acd"])  # a CA of its own, and "acd" signed by it
    forged = rpc.Tls.load(tmp_path / "ca.crt", tmp_path / "acd.crt", tmp_path / "acd.key")
    own_ca = rpc.Tls(test_tls.tls("acd").ca, forged.cert, forged.key)  # trusts our server
    async with rpc.channel(f"127.0.0.1:{servers['gateway']}", own_ca, "gateway") as channel:
        code = await invoke(channel, "/hotline.v1.CallControl/Hangup", False)
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_of_another_trust_domain_is_unauthenticated(
    servers: dict[str, int], tmp_path: Path
) -> None:
    """Same CA (e.g. a shared cluster issuer) but another site's identity: not one of ours."""
    ca = test_tls.cert_dir()
    cert, key = certs.issue_service_cert(
        (ca / "ca.crt").read_bytes(), (ca / "ca.key").read_bytes(), "acd", trust_domain="other"
    )
    other = rpc.Tls((ca / "ca.crt").read_bytes(), cert, key)
    async with rpc.channel(f"127.0.0.1:{servers['gateway']}", other, "gateway") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gateway_pb2_grpc.CallControlStub(channel).ListCalls(
                gateway_pb2.ListCallsRequest(), timeout=5
            )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "names no service of trust domain hotline" in (info.value.details() or "")


async def test_a_client_checks_the_server_is_the_service_it_wants(
    servers: dict[str, int],
) -> None:
    """The CRM dialling the ACD's address but reaching another service's server (a wrong
    host setting, or a spoofed address) does not talk to it."""
    async with test_tls.channel("crm", "acd", servers["recorder"]) as channel:
        code = await invoke(channel, "/hotline.v1.Acd/SetState", False)
    assert code == grpc.StatusCode.UNAVAILABLE
