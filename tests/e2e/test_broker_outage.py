"""A service that cannot reach the broker at start keeps retrying, says so in its logs and in
/readyz, and becomes ready by itself once the broker is there."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from common.stack import Stack
from tests.e2e.conftest import wait_for
from tests.ports import BROKER_OUTAGE, hotline_env

pytestmark = pytest.mark.e2e

KAFKA_PORT = BROKER_OUTAGE["KAFKA"]
METRICS_PORT = BROKER_OUTAGE["IVR_METRICS_PORT"]


def readyz() -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/readyz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_service_waits_for_broker_and_recovers(tmp_path: Path) -> None:
    env = hotline_env(BROKER_OUTAGE) | {"HOTLINE_VAR_DIR": str(tmp_path)}
    stack = Stack(env=env, log_dir=tmp_path / "log", kafka_port=KAFKA_PORT)
    try:
        stack.start(services=("ivr",), broker=False)
        broker = f"127.0.0.1:{KAFKA_PORT}"

        def naming_the_broker() -> tuple[int, dict[str, Any]] | None:
            """/readyz red, and (once the first attempt failed: "connecting" before) saying
            which broker the consumer cannot reach."""
            r = readyz()
            check = r[1].get("checks", {}).get("kafka-consumer-ivr", {})
            return r if r[0] == 503 and broker in check.get("detail", "") else None

        status, body = wait_for(naming_the_broker, what="503 from /readyz naming the broker")
        assert not body["checks"]["kafka-consumer-ivr"]["ok"]
        log = tmp_path / "log" / "ivr.log"
        wait_for(lambda: "retrying" in log.read_text(), what="a retry line in the log")

        stack.start_broker()
        wait_for(lambda: readyz()[0] == 200, timeout_s=40, what="ready after the broker came up")
    finally:
        stack.stop()
