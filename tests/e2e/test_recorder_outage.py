"""The recorder dies (kill -9) in the middle of a call and stays away while another call is
made: no call waits for it, every media port is released, and once it is back both calls are
recorded — complete, as long as the talk, once each.

This stack has its own ports (the shared e2e platform and the restart tests run beside it)."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    DTMF_PCAP,
    Api,
    Platform,
    Sipp,
    metric,
    register_phone,
    running_platform,
    wait_for,
)
from tests.e2e.test_call_path import channel_rms
from tests.ports import RECORDER_OUTAGE

pytestmark = pytest.mark.e2e

PORTS = RECORDER_OUTAGE.ports
RTP = RECORDER_OUTAGE.rtp


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("recorder-outage"), PORTS, RTP) as p:
        yield p


def rtp_ports_in_use() -> list[int]:
    """Ports of the gateway's RTP range that something still holds (a bind fails)."""
    held = []
    for port in range(RTP[0], RTP[1] + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                held.append(port)
    return held


def cdr(api: Api, ani: str) -> dict | None:
    status, body = api.call("GET", "/api/cdrs?limit=100")
    assert status == 200, body
    return next((row for row in body["cdrs"] if row["ani"] == ani), None)


def catalog(var_dir: Path, call_id: str) -> list[tuple[str, str, int]]:
    """(recording_id, status, duration_ms) of every recording of a call in the recorder's own
    catalog (read-only: the test looks, the recorder owns it)."""
    db = sqlite3.connect(f"file:{var_dir / 'recorder.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT recording_id, status, duration_ms FROM recordings WHERE call_id = ?",
            (call_id,),
        ).fetchall()
    finally:
        db.close()


def test_a_recorder_outage_delays_recordings_but_loses_none_and_holds_no_port(
    stack: Platform, tmp_path: Path
) -> None:
    def sipp(scenario: str, port: int, **kw: object) -> Sipp:
        return Sipp(scenario, port, stack.sip_port, log_dir=tmp_path, **kw)  # type: ignore[arg-type]

    def call(port: int, ani: str, talk_ms: int) -> Sipp:
        return sipp(
            "caller.xml",
            port,
            media_port=port + 2,
            keys={
                "service": "10000",
                "caller": ani,
                "dtmf_pcap": DTMF_PCAP.format(1),
                "talk_ms": str(talk_ms),
            },
            extra=["-s", "10000"],
            timeout_s=90,
        )

    phone = sipp("phone_uas.xml", 17101, media_port=17102, timeout_s=90)
    register_phone(sipp, "8013", 17100, 17101)
    agent = Api(stack.http)
    agent.login("agent13", "agent13-demo")
    agent.agent_ready()
    sup = Api(stack.http)
    sup.login("supervisor", "supervisor-demo")

    def agent_state() -> str:
        return agent.call("GET", "/api/agent")[1].get("state", "")

    # 1. The recorder is killed while the first call is talking.
    first = call(17110, "5558001", 8000)
    wait_for(lambda: agent_state() == "on_call", timeout_s=30, what="agent13 on the first call")
    time.sleep(2.0)
    stack.stack.kill("recorder")
    assert first.wait(60) == 0, first.explain()
    assert phone.wait(30) == 0, phone.explain()

    # 2. A second call is made and ends while the recorder is still down.
    wait_for(lambda: agent_state() == "ready", timeout_s=30, what="agent13 ready again")
    phone = sipp("phone_uas.xml", 17101, media_port=17102, timeout_s=90)
    second = call(17120, "5558002", 4000)
    assert second.wait(60) == 0, second.explain()
    assert phone.wait(30) == 0, phone.explain()

    # Neither call waited for the recorder: both are closed, their media ports are free, and
    # their recordings wait in the gateway's spool.
    rows = {
        ani: wait_for(
            lambda a=ani: (r := cdr(sup, a)) and r.get("ended_at") and r,
            timeout_s=30,
            what=f"the CDR of {ani} ended",
        )
        for ani in ("5558001", "5558002")
    }
    wait_for(lambda: not rtp_ports_in_use(), timeout_s=15, what="every RTP port released")
    gateway = stack.metrics("gateway")
    assert metric(gateway, "hotline_gateway_recordings_spooled", state="waiting") == 2
    assert metric(gateway, "hotline_gateway_recordings_spooled", state="recording") == 0
    assert metric(gateway, "hotline_gateway_recording_spool_bytes") > 0
    assert metric(gateway, "hotline_gateway_recording_uploads_total", result="retry") >= 1
    assert not any(row.get("recording_id") for row in rows.values())

    # 3. The recorder comes back: both recordings arrive, complete, once each.
    stack.stack.restart("recorder")
    stack.stack.wait_ready(("recorder",), timeout_s=60)
    for ani, row in rows.items():
        row = wait_for(
            lambda a=ani: (r := cdr(sup, a)) and r.get("recording_id") and r,
            timeout_s=60,
            what=f"the recording of {ani} in its CDR",
        )
        assert row["recording_status"] == "complete", row
        assert row["agent_id"] == "agent13" and row["end_reason"] == "caller_hangup", row
        duration, left, right = channel_rms(
            str(stack.var_dir / "recordings" / row["recording_path"])
        )
        assert abs(duration * 1000 - row["talk_ms"]) < 1500, (duration, row["talk_ms"])
        assert left > 300, "the caller's audio (g711a.pcap) is on the left channel"
        assert right > 300, "the agent's audio is on the right channel"
        [(recording_id, status, duration_ms)] = catalog(stack.var_dir, row["call_id"])
        assert (recording_id, status) == (row["recording_id"], "complete")
        assert abs(duration_ms - duration * 1000) < 1
    gateway = stack.metrics("gateway")
    assert metric(gateway, "hotline_gateway_recordings_spooled", state="waiting") == 0
    assert metric(gateway, "hotline_gateway_recording_spool_bytes") == 0
    assert metric(gateway, "hotline_gateway_recording_uploads_total", result="stored") == 2
    assert metric(gateway, "hotline_gateway_recording_failures_total") == 0
    assert not list((stack.var_dir / "spool").iterdir())
    phone.stop()
    wait_for(
        lambda: agent.call("POST", "/api/agent/logout", {})[0] in (200, 404),
        timeout_s=30,
        what="agent13 logged out",
    )
