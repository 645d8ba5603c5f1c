"""The broker restarts and loses every topic (Tansu keeps them in memory): the ACD keeps its
agents in memory, keeps serving, and puts their state back on the compacted `agents` topic, so
an ACD restarted after that still rebuilds every agent. A stack of its own: broker, gateway,
ACD on their own ports."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest

from common.replay import read_topic
from common.stack import Stack
from hotline.v1 import acd_pb2, acd_pb2_grpc
from hotline.v1 import events_pb2 as ev
from tests.e2e.conftest import secure_channel, wait_for
from tests.ports import BROKER_RESTART, hotline_env

pytestmark = pytest.mark.e2e

KAFKA_PORT = BROKER_RESTART["KAFKA"]
PORTS = BROKER_RESTART.ports


def acd_channel(var_dir: Path) -> grpc.Channel:
    return secure_channel(var_dir, "crm", f"127.0.0.1:{PORTS['ACD_GRPC_PORT']}", "acd")


BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"


def snapshots() -> dict[str, ev.AgentStateChanged]:
    """The last record per agent on the `agents` topic, as a rebuilding ACD would read it."""
    try:
        records = asyncio.run(read_topic(BOOTSTRAP, "agents", timeout_s=3))
    except Exception:  # the broker is still coming back  # noqa: BLE001
        return {}
    return {e.agent_state_changed.agent_id: e.agent_state_changed for e in records}


def test_broker_restart_loses_no_agent_state(tmp_path: Path) -> None:
    repo_prompts = Path(__file__).resolve().parents[2] / "var" / "prompts"
    shutil.copytree(repo_prompts, tmp_path / "prompts")
    env = hotline_env(BROKER_RESTART) | {"HOTLINE_VAR_DIR": str(tmp_path)}
    stack = Stack(env=env, log_dir=tmp_path / "log", kafka_port=KAFKA_PORT)
    try:
        stack.start(services=("gateway", "acd"))
        stack.wait_ready(("gateway", "acd"), timeout_s=60)
        with secure_channel(
            tmp_path, "crm", f"127.0.0.1:{PORTS['ACD_GRPC_PORT']}", "acd"
        ) as channel:
            acd = acd_pb2_grpc.AcdStub(channel)
            for n, reason in ((1, "meal"), (2, "training")):
                acd.Login(acd_pb2.LoginRequest(agent_id=f"b{n}", extension=f"800{n}"), timeout=5)
                acd.SetState(
                    acd_pb2.SetStateRequest(
                        agent_id=f"b{n}", state=ev.AGENT_STATE_NOT_READY, reason=reason
                    ),
                    timeout=5,
                )
            acd.Login(acd_pb2.LoginRequest(agent_id="b3", extension="8003", skills=["fr"]))
            acd.SetState(acd_pb2.SetStateRequest(agent_id="b3", state=ev.AGENT_STATE_READY))
            assert set(snapshots()) == {"b1", "b2", "b3"}

            stack.stop_service("broker")  # memory-only: every topic is gone
            stack.start_broker()
            restated = wait_for(
                lambda: len(s := snapshots()) == 3 and s,
                timeout_s=30,
                what="every agent's snapshot back on the agents topic",
            )
            assert all(s.restated for s in restated.values())
            assert (restated["b1"].state, restated["b1"].reason) == (
                ev.AGENT_STATE_NOT_READY,
                "meal",
            )
            assert restated["b3"].state == ev.AGENT_STATE_READY and restated["b3"].skills == ["fr"]
            # the ACD kept them in memory and keeps serving and publishing
            agent = acd.GetAgent(acd_pb2.AgentRef(agent_id="b2"), timeout=5)
            assert (agent.state, agent.reason) == (ev.AGENT_STATE_NOT_READY, "training")
            acd.SetState(
                acd_pb2.SetStateRequest(agent_id="b2", state=ev.AGENT_STATE_READY), timeout=10
            )
            wait_for(
                lambda: snapshots().get("b2", ev.AgentStateChanged()).state == ev.AGENT_STATE_READY,
                what="a new transition published after the broker restart",
            )

        # an ACD started after that rebuilds every agent from the repopulated topic
        proc = stack.procs.pop("acd")
        proc.kill()
        proc.wait()
        stack.start_service("acd")
        stack.wait_ready(("acd",), timeout_s=30)
        with secure_channel(
            tmp_path, "crm", f"127.0.0.1:{PORTS['ACD_GRPC_PORT']}", "acd"
        ) as channel:
            acd = acd_pb2_grpc.AcdStub(channel)
            got = {
                a: acd.GetAgent(acd_pb2.AgentRef(agent_id=a), timeout=5) for a in ("b1", "b2", "b3")
            }
        assert (got["b1"].state, got["b1"].reason) == (ev.AGENT_STATE_NOT_READY, "meal")
        assert got["b2"].state == ev.AGENT_STATE_READY
        assert got["b3"].state == ev.AGENT_STATE_READY
    finally:
        stack.stop()
