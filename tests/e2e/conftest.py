"""End-to-end fixtures: the real platform (broker + five service processes) on test ports,
SIPp as caller and agent phones, and small clients for the REST API and /metrics."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from common.stack import STANDBY_PORT_OFFSET, Stack
from tests.e2e.otlp_receiver import OtlpReceiver
from tests.ports import E2E

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp")
DTMF_PCAP = "/usr/share/sip-tester/dtmf_2833_{}.pcap"

PORTS = E2E.ports
RING_TIMEOUT_S = 4
WRAP_UP_S = 2
#: where a second ACD (the hot standby, `acd-standby`) serves when a test starts one
ACD_STANDBY_GRPC_PORT = E2E.standby["ACD_STANDBY_GRPC_PORT"]


def secure_channel(var_dir: Path, caller: str, target: str, peer: str) -> grpc.Channel:
    """A blocking gRPC channel to `target` (host:port, or a list such as both ACD replicas)
    as service `caller`, with the certificates a stack made under `var_dir`/tls."""
    d = var_dir / "tls"
    creds = grpc.ssl_channel_credentials(
        (d / "ca.crt").read_bytes(),
        (d / f"{caller}.key").read_bytes(),
        (d / f"{caller}.crt").read_bytes(),
    )
    return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", peer)])


@dataclass
class Platform:
    stack: Stack
    var_dir: Path
    http: str
    sip_port: int
    ports: dict[str, int]

    def grpc_channel(self, caller: str, peer: str) -> grpc.Channel:
        """A (blocking) channel to `peer`'s gRPC port with `caller`'s certificate, made by the
        stack under var/tls as `make run` does."""
        return secure_channel(
            self.var_dir, caller, f"127.0.0.1:{self.ports[f'{peer.upper()}_GRPC_PORT']}", peer
        )

    def metrics(self, service: str) -> str:
        port = self.ports[f"{service.upper()}_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.contextmanager
def running_platform(
    var_dir: Path,
    ports: dict[str, int],
    rtp: tuple[int, int],
    extra_env: dict[str, str] | None = None,
) -> Iterator[Platform]:
    """The broker and the five services on `ports`, state under `var_dir`; stopped on exit."""
    if SIPP is None:
        pytest.fail("sipp is not installed: run `make setup`")
    repo_prompts = Path(__file__).resolve().parents[2] / "var" / "prompts"
    if not (repo_prompts / "welcome.wav").exists():
        pytest.fail("prompts are missing: run `make setup` (make prompts)")
    shutil.copytree(repo_prompts, var_dir / "prompts", dirs_exist_ok=True)
    env = {f"HOTLINE_{k}": str(v) for k, v in ports.items() if k not in ("KAFKA", "SIP", "HTTP")}
    env.update(
        {
            "HOTLINE_SIP_PORT": str(ports["SIP"]),
            "HOTLINE_HTTP_PORT": str(ports["HTTP"]),
            "HOTLINE_VAR_DIR": str(var_dir),
            "HOTLINE_RTP_LOW": str(rtp[0]),
            "HOTLINE_RTP_HIGH": str(rtp[1]),
            "HOTLINE_RING_TIMEOUT_S": str(RING_TIMEOUT_S),
            "HOTLINE_WRAP_UP_S": str(WRAP_UP_S),
            "HOTLINE_LOG_LEVEL": "INFO",
            # both ACD replicas: clients reach whichever serves (test_acd_restart starts one)
            "HOTLINE_ACD_TARGET": (
                f"ipv4:127.0.0.1:{ports['ACD_GRPC_PORT']},"
                f"127.0.0.1:{ports['ACD_GRPC_PORT'] + STANDBY_PORT_OFFSET}"
            ),
            "HOTLINE_IVR_FLOWS": str(Path(__file__).parent / "flows.yaml"),
            **(extra_env or {}),
        }
    )
    stack = Stack(env=env, log_dir=var_dir / "log", kafka_port=ports["KAFKA"])
    stack.start()
    try:
        stack.wait_ready(timeout_s=90)
        yield Platform(stack, var_dir, f"http://127.0.0.1:{ports['HTTP']}", ports["SIP"], ports)
    finally:
        stack.stop()
        print(f"service logs kept in {var_dir / 'log'}")


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """Where the shared platform's services export their traces (OTLP/gRPC)."""
    receiver = OtlpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[Platform]:
    env = {"HOTLINE_OTLP_ENDPOINT": otlp.endpoint}
    with running_platform(tmp_path_factory.mktemp("var"), PORTS, E2E.rtp, extra_env=env) as p:
        yield p


# ---- SIPp --------------------------------------------------------------------------------
class Sipp:
    """One SIPp process running a scenario against the gateway."""

    def __init__(
        self,
        scenario: str,
        port: int,
        sip_port: int,
        media_port: int | None = None,
        keys: dict[str, str] | None = None,
        extra: list[str] | None = None,
        log_dir: Path | None = None,
        timeout_s: int = 60,
    ) -> None:
        self.log_dir = log_dir or Path("/tmp")
        self.name = f"{Path(scenario).stem}-{port}"
        # SIPp substitutes -key values in messages only, not in attributes such as a pcap
        # path or a pause length, so the scenario is rendered with the keys filled in.
        text = (SCENARIOS / scenario).read_text()
        for k, v in (keys or {}).items():
            text = text.replace(f"[{k}]", v)
        rendered = self.log_dir / f"{self.name}.xml"
        rendered.write_text(text)
        argv = [
            SIPP,
            f"127.0.0.1:{sip_port}",
            "-sf",
            str(rendered),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-nostdin",
            "-timeout",
            f"{timeout_s}s",
            "-timeout_error",
            "-trace_err",
            "-trace_msg",
            "-message_file",
            str(self.log_dir / f"{self.name}.msg"),
            "-error_file",
            str(self.log_dir / f"{self.name}.err"),
        ]
        if media_port is not None:
            argv += ["-mp", str(media_port)]
        argv += extra or []
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def wait(self, timeout_s: float = 90) -> int:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def messages(self) -> str:
        path = self.log_dir / f"{self.name}.msg"
        return path.read_text(errors="replace") if path.exists() else ""

    def explain(self) -> str:
        out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
        err = self.log_dir / f"{self.name}.err"
        return f"sipp {self.name} rc={self.proc.returncode}\n{out[-2000:]}\n" + (
            err.read_text(errors="replace")[-3000:] if err.exists() else ""
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def sipp(platform: Platform, tmp_path: Path):
    started: list[Sipp] = []

    def run(scenario: str, port: int, **kw: object) -> Sipp:
        s = Sipp(scenario, port, platform.sip_port, log_dir=tmp_path, **kw)
        started.append(s)
        return s

    yield run
    for s in started:
        s.stop()


def register_phone(sipp, ext: str, reg_port: int, uas_port: int) -> None:  # noqa: ANN001
    """Register `ext` from reg_port with its Contact pointing at the UAS SIPp on uas_port."""
    reg = sipp(
        "register.xml",
        reg_port,
        keys={"ext": ext, "contact_port": str(uas_port)},
        extra=["-au", ext, "-ap", f"{ext}-demo"],
    )
    assert reg.wait(30) == 0, reg.explain()


# ---- REST --------------------------------------------------------------------------------
class Api:
    def __init__(self, base: str) -> None:
        self.base, self.token = base, ""

    def call(self, method: str, path: str, body: object | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return exc.code, {"raw": raw.decode(errors="replace")}

    def login(self, username: str, password: str) -> dict:
        status, body = self.call("POST", "/api/login", {"username": username, "password": password})
        assert status == 200, body
        self.token = body["token"]
        return body

    def agent_ready(self) -> None:
        status, body = self.call("POST", "/api/agent/login", {})
        assert status == 200, body
        status, body = self.call("POST", "/api/agent/state", {"state": "ready"})
        assert status == 200, body


@pytest.fixture
def agents(platform: Platform):
    """`agents("agent3")` logs an agent in to the web API; all are logged out of the ACD after
    the test so one test's Ready agents never take another test's calls."""
    made: list[Api] = []

    def login(username: str) -> Api:
        client = Api(platform.http)
        client.login(username, f"{username}-demo")
        made.append(client)
        return client

    yield login
    for client in made:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # an agent on a call/wrap-up cannot leave yet
            status, _ = client.call("POST", "/api/agent/logout", {})
            if status in (200, 404):
                break
            client.call("POST", "/api/agent/state", {"state": "not_ready", "reason": "other"})
            time.sleep(0.5)


def options(port: int, local_port: int = 17099) -> str:
    """Send an OPTIONS from `local_port` to the gateway's SIP `port`; the answer."""
    msg = (
        f"OPTIONS sip:hotline@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bKdrain1;rport\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:hotline@127.0.0.1>\r\n"
        "Call-ID: drain-probe@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.bind(("127.0.0.1", local_port))
        s.sendto(msg, ("127.0.0.1", port))
        return s.recv(65535).decode(errors="replace")


def wait_for(predicate, timeout_s: float = 20, interval_s: float = 0.2, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last={last!r}")
