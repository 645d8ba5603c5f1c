"""The port plan: every port a test stack listens on and every RTP range it hands out, in one
place, so no two stacks share a port and none lies in the kernel's ephemeral port range
(32768-60999 here, /proc/sys/net/ipv4/ip_local_port_range) — there any outgoing connection of
the test run (a gRPC client, urllib, SIPp) can take the port first, and the service then
fails to bind it. tests/unit/test_port_plan.py checks both.

A stack's listening ports sit in one block of 100 (`block`):

    +1..+5  /metrics of gateway, acd, ivr, crm, recorder   +10  the analog sim card control
    +12     the ACD hot standby's /metrics (acd + STANDBY_PORT_OFFSET)
    +51..55 gRPC of gateway, acd, ivr, crm, recorder        +60  SIP (UDP and TCP)
    +62     the ACD hot standby's gRPC (acd + STANDBY_PORT_OFFSET)
    +80     the CRM's HTTP (desk and REST API)              +90  Prometheus (deploy tests)
    +92     the broker (Kafka protocol)

and RTP ranges stay out of 20000-25999 (the gateway's default range: `make run`, `make
bench`). Ports the peers of a test bind (SIPp, PJSUA, baresip, kamailio) are the tests' own
and not part of this plan. The benchmarks' ports (`make bench`) are declared beside them, in
bench/bench_fullpath.py (block 15100) and bench/bench_gateway_memory.py (block 15200; they
run alone, without tests/), and checked with this plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.stack import STANDBY_PORT_OFFSET

SERVICES = ("gateway", "acd", "ivr", "crm", "recorder")


@dataclass(frozen=True)
class StackPorts:
    """One stack's listening ports (keys as `running_platform` takes them: KAFKA, SIP, HTTP,
    PROMETHEUS, or the HOTLINE_* name without the prefix) and its gateway's RTP range."""

    name: str
    ports: dict[str, int]
    rtp: tuple[int, int] | None  # None: no gateway, no media ports
    #: ports a second ACD would take (ACD gRPC and metrics + STANDBY_PORT_OFFSET): clients
    #: of every `running_platform` stack dial both ACD replicas
    standby: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.ports[key]

    def listening(self) -> dict[str, int]:
        """Every port the stack may listen on, the standby ACD's included."""
        return self.ports | self.standby


def block(
    base: int,
    services: tuple[str, ...] = SERVICES,
    *,
    kafka: bool = True,
    sip: bool = True,
    http: bool = True,
    sim_control: bool = True,
    prometheus: bool = False,
) -> tuple[dict[str, int], dict[str, int]]:
    """(ports, standby ports) of a stack in the block `base`..`base` + 99 (see above)."""
    assert base % 100 == 0
    ports: dict[str, int] = {}
    if kafka:
        ports["KAFKA"] = base + 92
    if sip:
        ports["SIP"] = base + 60
    if http:
        ports["HTTP"] = base + 80
    for n, service in enumerate(SERVICES, start=1):
        if service in services:
            ports[f"{service.upper()}_GRPC_PORT"] = base + 50 + n
    for n, service in enumerate(SERVICES, start=1):
        if service in services:
            ports[f"{service.upper()}_METRICS_PORT"] = base + n
    if sim_control:
        ports["SIM_CONTROL_PORT"] = base + 10
    if prometheus:
        ports["PROMETHEUS"] = base + 90
    standby = {}
    if "acd" in services:
        standby = {
            "ACD_STANDBY_GRPC_PORT": ports["ACD_GRPC_PORT"] + STANDBY_PORT_OFFSET,
            "ACD_STANDBY_METRICS_PORT": ports["ACD_METRICS_PORT"] + STANDBY_PORT_OFFSET,
        }
    return ports, standby


def _stack(name: str, base: int, rtp: tuple[int, int] | None, **kw: Any) -> StackPorts:
    ports, standby = block(base, **kw)
    return StackPorts(name, ports, rtp, standby)


#: the shared e2e platform (tests/e2e/conftest.py), up for the whole session
E2E = _stack("e2e platform", 14000, (30000, 30999))
#: the broker restart with calls (tests/e2e/test_restarts.py)
RESTARTS = _stack("restarts", 14100, (27000, 27499))
#: the recorder outage (tests/e2e/test_recorder_outage.py)
RECORDER_OUTAGE = _stack("recorder outage", 14200, (27500, 27999))
#: the ACD across a broker restart: broker, gateway, ACD (tests/e2e/test_acd_broker_restart.py)
BROKER_RESTART = _stack(
    "acd broker restart", 14300, (28000, 28099), services=("gateway", "acd"), http=False
)
#: the gateway restart: broker, gateway, ACD, IVR (tests/e2e/test_acd_gateway_restart.py)
GATEWAY_RESTART = _stack(
    "acd gateway restart",
    14400,
    (28100, 28199),
    services=("gateway", "acd", "ivr", "crm"),
    http=False,
)
#: an IVR that starts before the broker (tests/e2e/test_broker_outage.py)
BROKER_OUTAGE = _stack(
    "broker outage", 14500, None, services=("ivr",), sip=False, http=False, sim_control=False
)
#: the full-path benchmark at a tiny rate (tests/e2e/test_bench_fullpath.py)
BENCH_FULLPATH_TEST = _stack("bench fullpath test", 14600, (29000, 29999))
#: the fault soak (tests/soak/test_fault_soak.py): 4,000 ports for its concurrent calls
SOAK = _stack("soak", 14700, (10000, 13999))
#: the gateway's SIP side in the test process against real SIP stacks (tests/e2e/sip)
SIP_INTEROP = _stack(
    "sip interop", 14800, (19000, 19999), services=(), kafka=False, http=False, sim_control=False
)
#: every recording rule and panel against a live stack (tests/deploy/test_observability.py)
DEPLOY_OBSERVABILITY = _stack("deploy observability", 14900, (18000, 18499), prometheus=True)
#: `podman kube play` of the chart (tests/deploy/test_kube_play.py): only the gateway is on
#: the host network (the other pods have their own network namespaces), with the ports of
#: charts/hotline/ci/podman-values.yaml, which the port plan test compares with these
DEPLOY_KUBE_PLAY = _stack(
    "deploy kube play",
    15000,
    (28200, 28299),
    services=("gateway",),
    kafka=False,
    http=False,
)

#: a gateway whose event loop runs at real-time priority (tests/e2e/test_gateway_priority.py)
GATEWAY_PRIORITY = _stack(
    "gateway priority", 15300, (28400, 28499), services=("gateway",), http=False
)

PLANS: tuple[StackPorts, ...] = (
    E2E,
    RESTARTS,
    RECORDER_OUTAGE,
    BROKER_RESTART,
    GATEWAY_RESTART,
    BROKER_OUTAGE,
    BENCH_FULLPATH_TEST,
    SOAK,
    SIP_INTEROP,
    DEPLOY_OBSERVABILITY,
    DEPLOY_KUBE_PLAY,
    GATEWAY_PRIORITY,
)


def hotline_env(plan: StackPorts) -> dict[str, str]:
    """HOTLINE_* variables putting a `Stack`'s services on `plan`'s ports and RTP range
    (the broker's port goes to `Stack(kafka_port=...)`, Prometheus is no service's)."""
    names = {"SIP": "SIP_PORT", "HTTP": "HTTP_PORT"}
    env = {
        f"HOTLINE_{names.get(k, k)}": str(v)
        for k, v in plan.ports.items()
        if k not in ("KAFKA", "PROMETHEUS")
    }
    if plan.rtp is not None:
        env |= {"HOTLINE_RTP_LOW": str(plan.rtp[0]), "HOTLINE_RTP_HIGH": str(plan.rtp[1])}
    return env
