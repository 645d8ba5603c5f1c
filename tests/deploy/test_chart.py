"""The Helm chart, rendered by the real Helm (helm-python-sdk) for every ci/ values set and
checked against the Kubernetes 1.30 schemas, the published CRD models, and what a call center
needs from it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from common.events import TOPICS
from tests.deploy.chart import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    ROOT,
    by_kind,
    one,
    render,
    render_ci,
    render_files,
    values_of,
)

CI = [p.name for p in CI_VALUES]
K8S_VERSION = "1.30.0"
CRD_MODELS = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}
OPERATOR_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "Cluster"}
CRD_VALIDATOR = ROOT / "deploy" / "crd-validate"
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
SERVICES = ("gateway", "acd", "ivr", "crm", "recorder")


def test_every_required_values_set_exists() -> None:
    assert {
        "default-values.yaml",
        "dahdi-card-values.yaml",
        "external-values.yaml",
        "operators-values.yaml",
        "second-site-values.yaml",
        "podman-values.yaml",
    } <= set(CI)


# ---- Kubernetes and CRD schemas ------------------------------------------------------------
@pytest.mark.parametrize("values", CI)
def test_every_object_validates_strictly_against_kubernetes_1_30(values: str) -> None:
    import kubernetes_validate

    checked = 0
    for doc in render_ci(values):
        if doc["kind"] in CRD_MODELS | OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']}: "
                f"{'.'.join(map(str, exc.path))}: {exc.message}"
            )
        checked += 1
    assert checked >= 15


def test_custom_resources_validate_with_the_published_models() -> None:
    if not (CRD_VALIDATOR / "node_modules").is_dir():
        pytest.fail("npm models missing: run `make crd-models` (part of `make setup`)")
    docs, kinds = [], set()
    for values in CI:
        for doc in render_ci(values):
            if doc["kind"] in CRD_MODELS:
                docs.append(doc)
                kinds.add(doc["kind"])
    assert kinds == CRD_MODELS, "some ci/ set must render each custom resource"
    proc = subprocess.run(
        ["node", "validate.mjs"],
        cwd=CRD_VALIDATOR,
        input=json.dumps(docs),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": valid") == len(docs)


def test_the_crd_validator_rejects_a_broken_service_monitor() -> None:
    """The models are not a rubber stamp: a wrong type is refused."""
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "interval": 15}]},
    }
    proc = subprocess.run(
        ["node", "validate.mjs"],
        cwd=CRD_VALIDATOR,
        input=json.dumps([bad]),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "interval must be string" in proc.stdout


def test_strimzi_objects_have_what_the_operator_requires() -> None:
    docs = render_ci("operators-values.yaml")
    kafka = one(docs, "Kafka", "-kafka")
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"] == {
        "strimzi.io/node-pools": "enabled",
        "strimzi.io/kraft": "enabled",
    }
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners and all({"name", "port", "type", "tls"} <= set(li) for li in listeners)
    assert "topicOperator" in kafka["spec"]["entityOperator"], "KafkaTopics need it"
    pools = by_kind(docs, "KafkaNodePool")
    assert len(pools) == 1
    pool = pools[0]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["spec"]["replicas"] >= 1 and pool["spec"]["storage"]["type"] == "jbod"
    assert all(
        v["type"] == "persistent-claim" and v["size"] for v in pool["spec"]["storage"]["volumes"]
    )
    topics = {t["spec"]["topicName"]: t for t in by_kind(docs, "KafkaTopic")}
    assert set(topics) == {"calls", "queues", "agents", "recordings"}
    for topic in topics.values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert topic["spec"]["partitions"] >= 1
        assert 1 <= topic["spec"]["replicas"] <= pool["spec"]["replicas"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", topic["metadata"]["name"])
    assert topics["agents"]["spec"]["config"]["cleanup.policy"] == "compact"
    assert topics["calls"]["spec"]["config"]["cleanup.policy"] == "delete"
    # the local stack makes its topics as the cluster's are: what runs locally (partition
    # assignment, the broker's per-partition cost) is what runs in the cluster
    assert {name: t["spec"]["partitions"] for name, t in topics.items()} == {
        name: parts for name, (parts, _) in TOPICS.items()
    }
    for deploy in by_kind(docs, "Deployment"):
        env = env_of(deploy)
        assert env["HOTLINE_KAFKA_BOOTSTRAP"] == f"{kafka['metadata']['name']}-kafka-bootstrap:9092"


def test_consumers_wait_at_the_broker_as_long_as_the_broker_kind_wants() -> None:
    """Apache Kafka answers a fetch as soon as data arrives, so its consumers wait 500 ms (an
    idle one asks twice a second, not fifty times); Tansu answers when the wait runs out, so
    under podman it stays the services' 20 ms. The services read the rendered value."""
    from acd.settings import AcdSettings
    from common.settings import Settings

    for values, wait in (("default-values.yaml", 500), ("podman-values.yaml", 20)):
        deployments = by_kind(render_ci(values), "Deployment")
        assert {d["metadata"]["name"].removeprefix("hotline-") for d in deployments} >= set(
            SERVICES
        )
        for deploy in deployments:
            env = env_of(deploy)
            assert env["HOTLINE_KAFKA_FETCH_WAIT_MS"] == str(wait), deploy["metadata"]["name"]
            given = {"HOTLINE_KAFKA_FETCH_WAIT_MS": env["HOTLINE_KAFKA_FETCH_WAIT_MS"] or ""}
            assert Settings.from_env(given).kafka_fetch_wait_ms == wait
            assert AcdSettings.from_env(given).acd_fetch_wait_ms == wait  # the ACD's tail


def test_cloudnativepg_cluster_has_what_the_operator_requires() -> None:
    docs = render_ci("operators-values.yaml")
    cluster = one(docs, "Cluster", "-pg")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] >= 1 and spec["storage"]["size"]
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["database"] and initdb["owner"]
    name = cluster["metadata"]["name"]
    for svc in ("crm", "recorder"):
        env = one(docs, "Deployment", f"-{svc}")["spec"]["template"]["spec"]["containers"][0]["env"]
        refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in env}
        assert refs["DB_USER"] == {"name": f"{name}-app", "key": "username"}
        assert refs["DB_PASSWORD"] == {"name": f"{name}-app", "key": "password"}
        url = next(e["value"] for e in env if e["name"] == "HOTLINE_DATABASE_URL")
        assert (
            url
            == f"postgresql+asyncpg://$(DB_USER):$(DB_PASSWORD)@{name}-rw:5432/{initdb['database']}"
        )
        names = [e["name"] for e in env]
        assert names.index("DB_PASSWORD") < names.index("HOTLINE_DATABASE_URL"), (
            "$(VAR) expands only variables defined earlier"
        )
    job = one(docs, "Job", "-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


# ---- lint and schema -----------------------------------------------------------------------
@pytest.mark.parametrize("values", CI)
def test_helm_lint_passes(values: str) -> None:
    import helm_python as helm

    report = helm.lint(
        CHART,
        values_of(CHART / "ci" / values),
        strict=True,
        kube_version="v1.30.0",
        namespace="call-center",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not problems, problems


BAD_VALUES = [
    (
        {"gateway": {"analog": {"card": "dahdi"}}},
        "at '/gateway/analog/card': 'dahdi' does not match pattern",
    ),
    (
        {"gateway": {"drainSeconds": 3600}},
        "at '/gateway/drainSeconds': maximum: got 3,600, want 840",
    ),
    (
        {"ivr": {"drainSeconds": 60}},
        "at '/ivr/drainSeconds': maximum: got 60, want 25",
    ),
    ({"image": {"tag": "latest"}}, 'image.tag: "latest" is refused'),
    (
        {"gateway": {"rtp": {"low": 21000, "high": 20000}}},
        "gateway.rtp.low (21000) must be below gateway.rtp.high (20000)",
    ),
    ({"acd": {"replicas": 3}}, "at '/acd/replicas': value must be one of 1, 2"),
    (
        {"monitoring": {"serviceLevel": {"thresholdSeconds": 25}}},
        "at '/monitoring/serviceLevel/thresholdSeconds': value must be one of 2, 5, 10, 15, 20",
    ),
    (
        {"gateway": {"analog": {"devices": {"mode": "privileged"}}}},
        "at '/gateway/analog/devices/mode': value must be one of 'devicePlugin', 'hostPath'",
    ),
    (
        {"kafka": {"bootstrap": ""}},
        "kafka.bootstrap is required when kafka.strimzi.enabled is false",
    ),
    ({"kafka": {"fetchWaitMs": 0}}, "at '/kafka/fetchWaitMs': minimum: got 0, want 1"),
    (
        {"database": {"crm": {"url": "postgresql://u@h/db"}}},
        "at '/database/crm/url': 'postgresql://u@h/db' does not match pattern",
    ),
    (
        {"database": {"mode": "external", "recorder": {"url": ""}}},
        "database.recorder.url or database.recorder.existingSecret is required",
    ),
    ({"gatway": {}}, "additional properties 'gatway' not allowed"),
    (
        {"gateway": {"persistence": {"mode": "tmpfs"}}},
        "at '/gateway/persistence/mode': value must be one of 'pvc', 'hostPath', 'emptyDir'",
    ),
    (
        {"gateway": {"sipTrunk": {"transport": "tls"}}},
        "at '/gateway/sipTrunk/transport': value must be one of 'udp', 'tcp'",
    ),
    (
        {"gateway": {"sipTrunk": {"numberOut": "0=+86"}}},
        "at '/gateway/sipTrunk/numberOut': '0=+86' does not match pattern",
    ),
    (
        {"gateway": {"sipTrunk": {"sessionExpires": 30}}},
        "at '/gateway/sipTrunk/sessionExpires'",
    ),
    (
        {"database": {"mode": "sqlite"}, "crm": {"replicas": 3}},
        "at '/crm/replicas': value must be 1",
    ),
    ({"gateway": {"realtimePriority": 100}}, "at '/gateway/realtimePriority'"),
]


@pytest.mark.parametrize(
    ("override", "message"), BAD_VALUES, ids=[m.split(":")[0][:40] for _, m in BAD_VALUES]
)
def test_bad_values_fail_with_a_clear_message(override: dict, message: str) -> None:
    from helm_python import HelmError

    values = merge(values_of(CHART / "ci" / "default-values.yaml"), override)
    with pytest.raises(HelmError) as info:
        render(values)
    assert message in str(info.value)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


# ---- what renders --------------------------------------------------------------------------
def containers(doc: dict) -> list[dict]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def env_of(doc: dict, index: int = 0) -> dict[str, str | None]:
    return {
        e["name"]: e.get("value")
        for e in doc["spec"]["template"]["spec"]["containers"][index].get("env", [])
    }


@pytest.mark.parametrize("values", CI)
def test_every_container_is_probed_limited_non_root_and_pinned_to_a_version(values: str) -> None:
    for doc in render_ci(values):
        if doc["kind"] not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        # no API credentials, except for two ACDs, which hold their Lease on the API server
        lease = doc["metadata"]["name"].endswith("-acd") and doc["spec"].get("replicas") == 2
        assert pod["automountServiceAccountToken"] is lease
        for c in containers(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            image = c["image"]
            assert ":" in image and not image.endswith(":latest"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), where
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            if not sc.get("privileged"):
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert sc["allowPrivilegeEscalation"] is False, where
            if doc["kind"] != "Job":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert c[probe]["httpGet"]["port"] == "metrics", (where, probe)
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where


@pytest.mark.parametrize("values", CI)
def test_gateway_is_pinned_with_the_device_exactly_when_a_card_is_configured(values: str) -> None:
    vals = values_of(CHART / "ci" / values)
    card = vals.get("gateway", {}).get("analog", {}).get("card", "none")
    gw = one(render_ci(values), "Deployment", "-gateway")
    pod = gw["spec"]["template"]["spec"]
    container = pod["containers"][0]
    resources = container["resources"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    has_device = "squat.ai/dahdi" in resources["limits"] or "/dev/dahdi" in mounts
    pinned = "affinity" in pod
    assert gw["spec"]["replicas"] == 1 and gw["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    if card.startswith("dahdi:"):
        term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        expr = term["nodeSelectorTerms"][0]["matchExpressions"][0]
        label = (
            vals["gateway"]["analog"]
            .get("nodeLabel", {})
            .get("key", "feature.node.kubernetes.io/pci-0780_d161.present")
        )
        assert expr == {"key": label, "operator": "In", "values": ["true"]}
        assert has_device
        assert env_of(gw)["HOTLINE_ANALOG_CARD"] == card
    else:
        assert not pinned and not has_device
        assert not container["securityContext"].get("privileged")


def test_device_modes() -> None:
    plugin = one(render_ci("dahdi-card-values.yaml"), "Deployment", "-gateway")
    c = plugin["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["squat.ai/dahdi"] == 1
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert plugin["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "hotline.io/analog-card", "operator": "Exists", "effect": "NoSchedule"}
    ]
    host = one(render_ci("dahdi-hostpath-values.yaml"), "Deployment", "-gateway")
    pod = host["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["securityContext"]["privileged"] is True
    assert {"name": "dahdi", "mountPath": "/dev/dahdi"} in c["volumeMounts"]
    assert {"name": "dahdi", "hostPath": {"path": "/dev/dahdi", "type": "Directory"}} in pod[
        "volumes"
    ]
    assert pod["securityContext"]["supplementalGroups"] == [20]


def test_realtime_priority_starts_the_gateway_as_root_with_only_what_it_needs() -> None:
    base = values_of(CHART / "ci" / "default-values.yaml")
    normal = one(render(base), "Deployment", "-gateway")
    assert env_of(normal)["HOTLINE_GATEWAY_REALTIME_PRIORITY"] == "0"
    assert "HOTLINE_GATEWAY_USER" not in env_of(normal)
    docs = render(merge(base, {"gateway": {"realtimePriority": 10}}))
    gw = one(docs, "Deployment", "-gateway")
    env = env_of(gw)
    assert (env["HOTLINE_GATEWAY_REALTIME_PRIORITY"], env["HOTLINE_GATEWAY_USER"]) == (
        "10",
        "10001:10001",  # the image's user, and the pod's fsGroup owns its volumes
    )
    sc = gw["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsUser": 0,
        "runAsNonRoot": False,
        "capabilities": {"drop": ["ALL"], "add": ["SYS_NICE", "SETUID", "SETGID"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert gw["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001
    for doc in docs:  # nothing else changes: every other container stays non-root
        if doc["kind"] in WORKLOADS and doc is not gw:
            for c in containers(doc):
                assert c["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
    hostpath = merge(
        values_of(CHART / "ci" / "dahdi-hostpath-values.yaml"),
        {"gateway": {"realtimePriority": 10}},
    )
    sc = one(render(hostpath), "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][
        0
    ]["securityContext"]
    assert (sc["privileged"], sc["runAsUser"], sc["runAsNonRoot"]) == (True, 0, False)


@pytest.mark.parametrize("values", CI)
def test_drain_is_wired(values: str) -> None:
    vals = values_of(CHART / "ci" / values)
    drain = vals.get("gateway", {}).get("drainSeconds", 300)
    docs = render_ci(values)
    gw = one(docs, "Deployment", "-gateway")
    pod = gw["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert env_of(gw)["HOTLINE_DRAIN_S"] == str(drain)
    assert pod["terminationGracePeriodSeconds"] == drain + 30
    # the IVR lets its flows in progress hand their callers to the ACD, within its grace period
    ivr = one(docs, "Deployment", "-ivr")
    ivr_drain = vals.get("ivr", {}).get("drainSeconds", 20)
    assert env_of(ivr)["HOTLINE_DRAIN_S"] == str(ivr_drain)
    assert ivr_drain < ivr["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    hook = c["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[0] == "/opt/hotline/venv/bin/python"
    assert "os.kill(1, signal.SIGTERM)" in hook[2] and "draining" in hook[2]
    port = vals.get("ports", {}).get("metrics", {}).get("gateway", 9101)
    assert f":{port}/readyz" in hook[2]
    compile(hook[2], "preStop", "exec")
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    annotations = gw["spec"]["template"]["metadata"]["annotations"]
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    pdbs = [
        p
        for p in by_kind(docs, "PodDisruptionBudget")
        if p["metadata"]["name"].endswith("-gateway")
    ]
    if vals.get("gateway", {}).get("pdb", {}).get("enabled"):
        assert pdbs[0]["spec"]["maxUnavailable"] == 0
    else:
        assert not pdbs


def test_advertised_address_from_the_node_or_from_values() -> None:
    gw = one(render_ci("default-values.yaml"), "Deployment", "-gateway")
    env = gw["spec"]["template"]["spec"]["containers"][0]["env"]
    sip = next(e for e in env if e["name"] == "HOTLINE_SIP_HOST")
    assert sip["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    gw = one(render_ci("dahdi-card-values.yaml"), "Deployment", "-gateway")
    assert env_of(gw)["HOTLINE_SIP_HOST"] == "192.0.2.10"


def test_the_carrier_trunk_reaches_the_gateway_with_its_password_from_a_secret() -> None:
    gw = one(render_ci("dahdi-card-values.yaml"), "Deployment", "-gateway")
    env = env_of(gw)
    assert env["HOTLINE_SIP_TRUNK_HOST"] == "sip.carrier.example"
    assert (
        env["HOTLINE_SIP_TRUNK_TRANSPORT"] == "tcp" and env["HOTLINE_SIP_TRUNK_REGISTER"] == "true"
    )
    assert env["HOTLINE_SIP_TRUNK_NUMBER_OUT"] == "00=>+,0=>+86"
    assert env["HOTLINE_SIP_TRUNK_CODECS"] == "PCMA" and env["HOTLINE_TRUNK_TRUST_PAI"] == "true"
    password = next(
        e
        for e in gw["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "HOTLINE_SIP_TRUNK_PASSWORD"
    )
    assert password["valueFrom"] == {
        "secretKeyRef": {"name": "hotline-sip-trunk", "key": "password"}
    }
    plain = merge(
        values_of(CHART / "ci" / "default-values.yaml"),
        {"gateway": {"sipTrunk": {"host": "192.0.2.50", "username": "u", "password": "pw"}}},
    )
    docs = render(plain)
    secret = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-sip-trunk")
    )
    assert secret["stringData"] == {"password": "pw"}
    gw = one(docs, "Deployment", "-gateway")
    assert "HOTLINE_SIP_TRUNK_HOST" in env_of(gw)
    without = one(render_ci("default-values.yaml"), "Deployment", "-gateway")
    assert not any(k.startswith("HOTLINE_SIP_TRUNK_") for k in env_of(without))


def test_rtp_range_is_never_enumerated() -> None:
    for values in CI:
        gw = one(render_ci(values), "Deployment", "-gateway")
        ports = gw["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert len(ports) == 4, ports


def test_services_pdbs_hpas_and_spread() -> None:
    docs = render_ci("external-values.yaml")
    services = {s["metadata"]["name"].rsplit("-", 1)[1]: s for s in by_kind(docs, "Service")}
    assert set(services) == set(SERVICES)
    for name, svc in services.items():
        ports = {p["name"] for p in svc["spec"]["ports"]}
        assert ports == ({"grpc", "metrics", "http"} if name == "crm" else {"grpc", "metrics"})
        assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    hpas = {
        h["spec"]["scaleTargetRef"]["name"].rsplit("-", 1)[1]
        for h in by_kind(docs, "HorizontalPodAutoscaler")
    }
    assert hpas == {"ivr", "crm"}
    pdbs = {p["metadata"]["name"].rsplit("-", 1)[1] for p in by_kind(docs, "PodDisruptionBudget")}
    assert {"acd", "ivr", "crm", "recorder"} <= pdbs
    for deploy in by_kind(docs, "Deployment"):
        name = deploy["metadata"]["name"].rsplit("-", 1)[1]
        if name != "gateway":
            spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
            assert {s["topologyKey"] for s in spread} == {
                "kubernetes.io/hostname",
                "topology.kubernetes.io/zone",
            }
        if name in hpas:
            assert "replicas" not in deploy["spec"], "the HPA owns the replica count"


def test_two_acd_replicas_run_under_a_kubernetes_lease() -> None:
    def acd_objects(replicas: int) -> tuple[dict, list[dict]]:
        values = merge(
            values_of(CHART / "ci" / "default-values.yaml"), {"acd": {"replicas": replicas}}
        )
        docs = render(values)
        return one(docs, "Deployment", "-acd"), docs

    single, docs = acd_objects(1)
    spec = single["spec"]["template"]["spec"]
    assert single["spec"]["strategy"] == {"type": "Recreate"}
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ServiceAccount")]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert "HOTLINE_ACD_LEASE" not in env  # one replica: the file lease in its own volume

    pair, docs = acd_objects(2)
    spec = pair["spec"]["template"]["spec"]
    assert pair["spec"]["replicas"] == 2
    assert pair["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert spec["serviceAccountName"] == "hotline-acd" and spec["automountServiceAccountToken"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert (env["HOTLINE_ACD_LEASE"], env["HOTLINE_ACD_LEASE_NAME"]) == (
        "kubernetes",
        "hotline-acd",
    )
    assert spec["containers"][0]["readinessProbe"]["periodSeconds"] == 1
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["hotline-acd"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hotline-acd", "namespace": NAMESPACE}
    ]
    policy = one(docs, "NetworkPolicy", "-acd")
    assert {"ipBlock": {"cidr": "0.0.0.0/0"}} in [
        to
        for rule in policy["spec"]["egress"]
        for to in rule.get("to", [])
        if any(p["port"] == 6443 for p in rule["ports"])
    ]
    assert one(docs, "PodDisruptionBudget", "-acd")["spec"]["minAvailable"] == 1


def test_ingress_with_tls_and_certificate() -> None:
    docs = render_ci("dahdi-card-values.yaml")
    ingress = one(docs, "Ingress", "-desk")
    assert ingress["spec"]["tls"][0]["hosts"] == ["desk.hq.example.com"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "hotline-crm", "port": {"name": "http"}}
    cert = one(docs, "Certificate", "-desk")
    assert cert["spec"]["secretName"] == ingress["spec"]["tls"][0]["secretName"]
    assert not by_kind(render_ci("default-values.yaml"), "Ingress")


def test_configuration_objects() -> None:
    docs = render_ci("default-values.yaml")
    acd_cm = one(docs, "ConfigMap", "-acd")
    assert acd_cm["data"]["queues"] == "sales,support"
    acd = one(docs, "Deployment", "-acd")
    queues = next(
        e
        for e in acd["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "HOTLINE_ACD_QUEUES"
    )
    assert queues["valueFrom"]["configMapKeyRef"] == {"name": "hotline-acd", "key": "queues"}
    secret = one(docs, "Secret", "-database")
    assert set(secret["stringData"]) == {"crm-url", "recorder-url"}
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pvc = one(docs, "PersistentVolumeClaim", "-recordings")
    recorder = one(docs, "Deployment", "-recorder")
    volumes = recorder["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "var",
        "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]},
    } in volumes
    # existing Secrets by name, flows as a ConfigMap
    ext = render_ci("dahdi-card-values.yaml")
    made = [s["metadata"]["name"] for s in by_kind(ext, "Secret")]
    assert made == ["hotline-metrics-token"], "existing Secrets: the chart makes none of them"
    crm = one(ext, "Deployment", "-crm")
    url = next(
        e
        for e in crm["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "HOTLINE_DATABASE_URL"
    )
    assert url["valueFrom"]["secretKeyRef"] == {"name": "hotline-db", "key": "crm-url"}
    flows = "numbers:\n  '10000': {name: main}\n"
    docs = render(merge(values_of(CHART / "ci" / "default-values.yaml"), {"ivr": {"flows": flows}}))
    assert one(docs, "ConfigMap", "-ivr")["data"]["flows.yaml"] == flows
    assert (
        env_of(one(docs, "Deployment", "-ivr"))["HOTLINE_IVR_FLOWS"]
        == "/etc/hotline/ivr/flows.yaml"
    )


def test_the_gateways_spool_and_state_outlive_the_pod() -> None:
    """Recordings wait in the gateway's spool while the recorder is away: its volume must
    survive the pod (a restart, a rollout on the card node)."""

    def var_volume(docs: list[dict] | tuple[dict, ...]) -> dict:
        gateway = one(docs, "Deployment", "-gateway")
        mounts = gateway["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "var", "mountPath": "/var/lib/hotline"} in mounts
        assert env_of(gateway)["HOTLINE_VAR_DIR"] == "/var/lib/hotline"  # the spool is under it
        [var] = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "var"]
        return var

    for values in ("default-values.yaml", "dahdi-card-values.yaml"):
        docs = render_ci(values)
        pvc = one(docs, "PersistentVolumeClaim", "-gateway-data")
        assert var_volume(docs) == {
            "name": "var",
            "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]},
        }
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    base = values_of(CHART / "ci" / "default-values.yaml")

    def with_persistence(**kw: str) -> list[dict]:
        return render(merge(base, {"gateway": {"persistence": kw}}))

    docs = with_persistence(mode="pvc", existingClaim="gw-local", size="2Gi")
    assert var_volume(docs)["persistentVolumeClaim"] == {"claimName": "gw-local"}
    assert not [d for d in by_kind(docs, "PersistentVolumeClaim") if "gateway" in str(d)]
    docs = with_persistence(mode="hostPath", hostPath="/srv/hotline")
    assert var_volume(docs)["hostPath"] == {"path": "/srv/hotline", "type": "DirectoryOrCreate"}
    assert var_volume(with_persistence(mode="emptyDir")) == {"name": "var", "emptyDir": {}}


def test_migrations_job_runs_alembic_for_crm_and_recorder() -> None:
    job = one(render_ci("default-values.yaml"), "Job", "-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    steps = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    for svc in ("crm", "recorder"):
        cmd = steps[svc]["command"]
        assert cmd == [
            "/opt/hotline/venv/bin/python",
            "-m",
            "alembic",
            "-c",
            f"/opt/hotline/services/{svc}/alembic.ini",
            "upgrade",
            "head",
        ]
        assert (ROOT / "services" / svc / "alembic.ini").exists()
        ref = steps[svc]["env"][0]["valueFrom"]["secretKeyRef"]
        assert steps[svc]["env"][0]["name"] == "HOTLINE_DATABASE_URL"
        assert ref == {"name": "hotline-database", "key": f"{svc}-url"}
    assert not by_kind(render_ci("podman-values.yaml"), "Job"), "SQLite: services migrate at start"


# ---- network policies ----------------------------------------------------------------------
def method_table_callers() -> dict[str, set[str]]:
    """service -> the services any of its gRPC methods admits (the servicers' CALLERS)."""
    from acd.servicer import AcdService
    from crm.servicer import CrmService
    from gateway.servicer import CallControlServicer
    from ivr.servicer import IvrService
    from recorder.servicer import RecorderService

    tables = {
        "gateway": CallControlServicer.CALLERS,
        "acd": AcdService.CALLERS,
        "ivr": IvrService.CALLERS,
        "crm": CrmService.CALLERS,
        "recorder": RecorderService.CALLERS,
    }
    return {svc: set().union(*table.values()) for svc, table in tables.items()}


def test_network_policies_allow_exactly_the_design_flows() -> None:
    docs = render_ci("operators-values.yaml")
    policies = {
        p["metadata"]["name"].rsplit("-", 1)[1]: p["spec"] for p in by_kind(docs, "NetworkPolicy")
    }
    assert set(policies) == {"acd", "ivr", "crm", "recorder", "migrations"}
    grpc = {"gateway": 50051, "acd": 50052, "ivr": 50053, "crm": 50054, "recorder": 50055}

    def grpc_ingress(svc: str) -> set[str]:
        callers = set()
        for rule in policies[svc]["ingress"]:
            if rule["ports"] != [{"port": grpc[svc], "protocol": "TCP"}]:
                continue
            for peer in rule["from"]:
                callers.add(
                    peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    if "podSelector" in peer
                    else "node-network"
                )
        return callers

    def grpc_egress(svc: str) -> set[str]:
        called = set()
        for rule in policies[svc]["egress"]:
            for port in rule.get("ports", []):
                for name, number in grpc.items():
                    if port["port"] == number:
                        called.add(name)
        return called

    # exactly the services' method tables (CALLERS in each servicer.py): a service may reach
    # another's gRPC port iff some method there names it
    callers = method_table_callers()
    assert callers["ivr"] == {"crm"} and callers["recorder"] == {"gateway", "crm"}
    node = {"gateway": "node-network"}  # the host-networked gateway is the node network
    for svc in ("acd", "ivr", "crm", "recorder"):
        assert grpc_ingress(svc) == {node.get(c, c) for c in callers[svc]}, svc
        assert grpc_egress(svc) == {t for t, who in callers.items() if svc in who}, svc
    for svc in ("acd", "ivr", "crm", "recorder"):
        egress = json.dumps(policies[svc]["egress"])
        assert '"strimzi.io/cluster": "hotline-kafka"' in egress, f"{svc} must reach Kafka"
        assert ('"cnpg.io/cluster": "hotline-pg"' in egress) == (svc in ("crm", "recorder"))
        first = policies[svc]["ingress"][0]
        assert first["from"][0]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
        }
    http = [
        r for r in policies["crm"]["ingress"] if r["ports"] == [{"port": 8080, "protocol": "TCP"}]
    ]
    assert http and "namespaceSelector" in http[0]["from"][0]
    external = {
        p["metadata"]["name"].rsplit("-", 1)[1]: p["spec"]
        for p in by_kind(render_ci("external-values.yaml"), "NetworkPolicy")
    }
    kafka = [
        r
        for r in external["acd"]["egress"]
        if r.get("to", [{}])[0].get("ipBlock", {}).get("cidr") == "10.20.0.0/16"
    ]
    assert kafka[0]["ports"] == [{"port": 9094, "protocol": "TCP"}]


# ---- one place for the environment ---------------------------------------------------------
def documented_variables() -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    names = set()
    for cell in re.findall(r"^\| `([^|]+)` \|", text, flags=re.MULTILINE):
        for name in re.findall(r"HOTLINE_[A-Z_<>]+", cell):
            if "<SVC>" in name:
                names |= {name.replace("<SVC>", s.upper()) for s in SERVICES}
            else:
                names.add(name)
    return names


def test_every_hotline_variable_is_documented_and_set_in_one_place() -> None:
    documented = documented_variables()
    set_by_chart: set[str] = set()
    for values in CI:
        for doc in render_ci(values):
            if doc["kind"] in WORKLOADS:
                for c in containers(doc):
                    set_by_chart |= {
                        e["name"] for e in c.get("env", []) if e["name"].startswith("HOTLINE_")
                    }
    assert not set_by_chart - documented, set_by_chart - documented
    for template in (CHART / "templates").iterdir():
        if template.name != "_env.tpl":
            assert "HOTLINE_" not in template.read_text(), (
                f"{template.name} names a HOTLINE_ variable: map it in _env.tpl"
            )
    env_tpl = (CHART / "templates" / "_env.tpl").read_text()
    names = re.findall(r"name: (HOTLINE_[A-Z_]+)", env_tpl) + re.findall(
        r'printf "(HOTLINE_[A-Z_%s]+)"', env_tpl
    )
    assert len(names) == len(set(names)), "each variable is written once"


# ---- NOTES and monitoring objects ----------------------------------------------------------
def test_notes_tell_what_to_do_next() -> None:
    notes = render_files(values_of(CHART / "ci" / "dahdi-card-values.yaml"))[
        "hotline/templates/NOTES.txt"
    ]
    assert "https://desk.hq.example.com/" in notes
    assert (
        "192.0.2.10:5060" in notes and "feature.node.kubernetes.io/pci-0780_d161.present" in notes
    )
    notes = render_files(values_of(CHART / "ci" / "default-values.yaml"))[
        "hotline/templates/NOTES.txt"
    ]
    assert "DEMO set" in notes and "port-forward" in notes


def test_service_monitors() -> None:
    docs = render_ci("default-values.yaml")
    monitors = by_kind(docs, "ServiceMonitor")
    assert len(monitors) == 5
    for sm in monitors:
        ep = sm["spec"]["endpoints"][0]
        assert ep["port"] == "metrics" and ep["honorLabels"] is True
        assert ep["relabelings"][0]["targetLabel"] == "site"
        assert sm["spec"]["jobLabel"] == "hotline.io/job"
    assert not by_kind(render_ci("podman-values.yaml"), "ServiceMonitor")


def test_rules_file_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, "deploy/rules.py", "--check"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_rules_in_the_chart_are_the_rules_file() -> None:
    rule = one(render_ci("default-values.yaml"), "PrometheusRule", "hotline")
    file_groups = yaml.safe_load((CHART / "rules" / "hotline.rules.yaml").read_text())["groups"]
    rendered = {g["name"]: g for g in rule["spec"]["groups"]}
    for group in file_groups:
        text = json.dumps(group).replace(
            "https://hotline.invalid/runbook.md",
            "https://github.com/hotline-cc/hotline/blob/main/docs/runbook.md",
        )
        assert json.loads(text) == rendered[group["name"]]
    settings = rendered["hotline-settings"]["rules"]
    thresholds = [
        r for r in settings if r["record"] == "hotline:queue_service_level_threshold_seconds"
    ]
    assert {r["labels"]["le"] for r in thresholds} == {"20.0"}, (
        "le must match the ACD histogram's label text"
    )


# ---- gRPC mutual TLS ---------------------------------------------------------------------
@pytest.mark.parametrize("values", CI)
def test_every_service_mounts_its_own_grpc_certificate(values: str) -> None:
    docs = render_ci(values)
    insecure = values_of(CHART / "ci" / values).get("grpcTls", {}).get("insecureDevelopment")
    assert not insecure, "no ci/ set turns gRPC TLS off"
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        svc = doc["metadata"]["labels"]["app.kubernetes.io/name"]
        if svc not in SERVICES:
            continue
        pod = doc["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "grpc-tls"]
        assert volume["secret"]["secretName"].endswith(f"-grpc-tls-{svc}") or values_of(
            CHART / "ci" / values
        ).get("grpcTls", {}).get("secretPrefix")
        env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
        assert env["HOTLINE_TLS_CA"] == "/etc/hotline/tls/ca.crt"
        assert env["HOTLINE_TLS_CERT"] == "/etc/hotline/tls/tls.crt"
        assert env["HOTLINE_TLS_KEY"] == "/etc/hotline/tls/tls.key"
        assert "HOTLINE_GRPC_INSECURE" not in env
        mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", [])]
        assert {"name": "grpc-tls", "mountPath": "/etc/hotline/tls", "readOnly": True} in mounts


def test_cert_manager_makes_a_ca_and_a_certificate_per_service_with_its_identity() -> None:
    docs = render_ci("dahdi-card-values.yaml")
    certs = {c["metadata"]["name"]: c["spec"] for c in by_kind(docs, "Certificate")}
    issuers = {i["metadata"]["name"]: i["spec"] for i in by_kind(docs, "Issuer")}
    assert issuers == {
        "hotline-grpc-selfsigned": {"selfSigned": {}},
        "hotline-grpc-ca": {"ca": {"secretName": "hotline-grpc-ca"}},
    }
    assert certs["hotline-grpc-ca"]["isCA"] is True
    for svc in SERVICES:
        spec = certs[f"hotline-grpc-tls-{svc}"]
        assert spec["secretName"] == f"hotline-grpc-tls-{svc}"
        assert spec["uris"] == [f"spiffe://hotline.call-center/{svc}"]
        assert spec["dnsNames"] == [svc]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"] == {
            "name": "hotline-grpc-ca",
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
    own = render(
        values_of(CHART / "ci" / "dahdi-card-values.yaml")
        | {
            "grpcTls": {
                "trustDomain": "hq.example",
                "certManager": {
                    "enabled": True,
                    "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
                },
            }
        }
    )
    assert not by_kind(own, "Issuer")
    acd = one(own, "Certificate", "grpc-tls-acd")["spec"]
    assert acd["issuerRef"]["name"] == "corp-ca" and acd["uris"] == ["spiffe://hq.example/acd"]


def test_without_cert_manager_the_secrets_are_expected_and_nothing_is_issued() -> None:
    docs = render_ci("default-values.yaml")
    assert not by_kind(docs, "Certificate") and not by_kind(docs, "Issuer")
    crm = one(docs, "Deployment", "-crm")
    env = {e["name"]: e.get("value") for e in containers(crm)[0]["env"]}
    assert env["HOTLINE_TLS_TRUST_DOMAIN"] == "hotline.call-center"


def test_the_development_switch_turns_tls_off_and_says_so() -> None:
    docs = render(
        values_of(CHART / "ci" / "default-values.yaml") | {"grpcTls": {"insecureDevelopment": True}}
    )
    for doc in by_kind(docs, "Deployment"):
        pod = doc["spec"]["template"]["spec"]
        assert "grpc-tls" not in [v["name"] for v in pod["volumes"]]
        env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
        if doc["metadata"]["labels"]["app.kubernetes.io/name"] in SERVICES:
            assert env["HOTLINE_GRPC_INSECURE"] == "true"


# ---- /metrics behind a token -------------------------------------------------------------
def test_metrics_need_a_token_that_the_service_monitors_present() -> None:
    docs = render_ci("operators-values.yaml")
    (secret,) = by_kind(docs, "Secret")[-1:]
    assert secret["metadata"]["name"] == "hotline-metrics-token"
    assert len(secret["data"]["token"]) >= 40
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for monitor in by_kind(docs, "ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["authorization"] == {
            "type": "Bearer",
            "credentials": {"name": "hotline-metrics-token", "key": "token"},
        }
    for doc in by_kind(docs, "Deployment"):
        pod = doc["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
        assert env["HOTLINE_METRICS_TOKEN_FILE"] == "/etc/hotline/metrics/token"
        assert "metrics-token" in [v["name"] for v in pod["volumes"]]
    own = render(
        values_of(CHART / "ci" / "operators-values.yaml")
        | {"monitoring": {"metricsAuth": {"enabled": True, "existingSecret": "prom-token"}}}
    )
    assert "hotline-metrics-token" not in [s["metadata"]["name"] for s in by_kind(own, "Secret")]
    monitor = by_kind(own, "ServiceMonitor")[0]["spec"]["endpoints"][0]
    assert monitor["authorization"]["credentials"]["name"] == "prom-token"
