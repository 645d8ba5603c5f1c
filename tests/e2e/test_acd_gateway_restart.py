"""The gateway dies (kill -9) and restarts with a call bridged to an agent and a caller waiting:
it loses both calls, and the ACD must free the agent (wrap-up, then Ready) and count the
waiting caller abandoned — whether the restarted gateway announces the ends it lost
(`END_REASON_GATEWAY_RESTART`) or not (the ACD checks its calls against `ListCalls`).
A stack of its own: broker, gateway, ACD, IVR, with SIPp caller and phone."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from common.stack import Stack
from hotline.v1 import acd_pb2, acd_pb2_grpc
from hotline.v1 import events_pb2 as ev
from tests.e2e.conftest import (
    DTMF_PCAP,
    SIPP,
    Sipp,
    metric,
    register_phone,
    secure_channel,
    wait_for,
)
from tests.ports import GATEWAY_RESTART, hotline_env

pytestmark = pytest.mark.e2e

KAFKA_PORT = GATEWAY_RESTART["KAFKA"]
SIP_PORT = GATEWAY_RESTART["SIP"]
PORTS = GATEWAY_RESTART.ports
SETTINGS = {"HOTLINE_WRAP_UP_S": "2", "HOTLINE_ACD_RECONCILE_S": "2"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if SIPP is None:
        pytest.fail("sipp is not installed: run `make setup`")
    shutil.copytree(Path(__file__).resolve().parents[2] / "var" / "prompts", tmp_path / "prompts")
    env = hotline_env(GATEWAY_RESTART) | SETTINGS | {"HOTLINE_VAR_DIR": str(tmp_path)}
    s = Stack(env=env, log_dir=tmp_path / "log", kafka_port=KAFKA_PORT)
    try:
        s.start(services=("gateway", "acd", "ivr"))
        s.wait_ready(("gateway", "acd", "ivr"), timeout_s=60)
        yield s
    finally:
        s.stop()


def acd_channel(var_dir: Path) -> grpc.Channel:
    return secure_channel(var_dir, "crm", f"127.0.0.1:{PORTS['ACD_GRPC_PORT']}", "acd")


def acd_metrics() -> str:
    import urllib.request

    url = f"http://127.0.0.1:{PORTS['ACD_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_gateway_restart_frees_the_agent_and_abandons_the_waiting_caller(
    stack: Stack, tmp_path: Path
) -> None:
    started: list[Sipp] = []

    def sipp(scenario: str, port: int, **kw: object) -> Sipp:
        started.append(Sipp(scenario, port, SIP_PORT, log_dir=tmp_path, **kw))  # type: ignore[arg-type]
        return started[-1]

    def caller(port: int, ani: str, digit: int) -> Sipp:
        keys = {"service": "10000", "caller": ani, "dtmf_pcap": DTMF_PCAP.format(digit)}
        return sipp(
            "caller.xml",
            port,
            media_port=port + 2,
            keys=keys | {"talk_ms": "60000"},
            extra=["-s", "10000"],
            timeout_s=90,
        )

    try:
        sipp("phone_uas.xml", 16511, media_port=16512, timeout_s=90)
        register_phone(sipp, "8001", 16510, 16511)
        with secure_channel(
            tmp_path, "crm", f"127.0.0.1:{PORTS['ACD_GRPC_PORT']}", "acd"
        ) as channel:
            acd = acd_pb2_grpc.AcdStub(channel)
            acd.Login(acd_pb2.LoginRequest(agent_id="g1", extension="8001"), timeout=5)
            acd.SetState(acd_pb2.SetStateRequest(agent_id="g1", state=ev.AGENT_STATE_READY))

            def state() -> int:
                return acd.GetAgent(acd_pb2.AgentRef(agent_id="g1"), timeout=5).state

            caller(16520, "5558001", 1)
            wait_for(lambda: state() == ev.AGENT_STATE_ON_CALL, timeout_s=30, what="g1 on call")
            caller(16530, "5558002", 2)
            wait_for(
                lambda: metric(acd_metrics(), "hotline_queue_calls_waiting", queue="support") == 1,
                timeout_s=30,
                what="the second caller waiting",
            )

            gateway = stack.procs.pop("gateway")
            gateway.kill()
            gateway.wait()
            restarted = time.monotonic()
            stack.start_service("gateway")
            stack.wait_ready(("gateway",), timeout_s=30)

            # the agent is freed: wrap-up, then Ready; the waiting caller counted abandoned
            wait_for(
                lambda: state() == ev.AGENT_STATE_WRAP_UP,
                timeout_s=20,
                interval_s=0.1,
                what="g1 in wrap-up after the gateway lost the call",
            )
            wait_for(lambda: state() == ev.AGENT_STATE_READY, timeout_s=10, what="g1 Ready")
            acd_now = acd_metrics()
            assert metric(acd_now, "hotline_queue_calls_waiting", queue="support") == 0
            assert metric(acd_now, "hotline_queue_abandoned_total", queue="support") == 1
            print(f"agent Ready {time.monotonic() - restarted:.1f}s after the gateway restart")
            reply = acd.GetQueue(acd_pb2.QueueRef(queue="support"), timeout=5)
            assert list(reply.calls) == [] and reply.abandoned == 1
    finally:
        for s in started:
            s.stop()
