"""The tests' port plan (tests/ports.py): no two stacks share a listening port or an RTP port,
and none lies in the kernel's ephemeral range, where any outgoing connection of the test run
can take a port before the service binds it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from bench import bench_gateway_memory
from bench.bench_fullpath import BENCH_PORTS
from gateway.settings import GatewaySettings
from tests import ports
from tests.ports import PLANS, StackPorts

FALLBACK_EPHEMERAL = (32768, 60999)
PODMAN_VALUES = Path(__file__).resolve().parents[2] / "charts/hotline/ci/podman-values.yaml"

#: `make bench`'s stack, declared in bench/ (it runs alone) on the gateway's default RTP range
BENCH = StackPorts(
    "bench (make bench)", BENCH_PORTS, (GatewaySettings.rtp_low, GatewaySettings.rtp_high)
)
#: `bench_gateway_memory.py`: the gateway's SIP channel and switch in the bench's own process
BENCH_GATEWAY_MEMORY = StackPorts(
    "bench gateway memory (make bench)",
    {"SIP": bench_gateway_memory.SIP_PORT},
    bench_gateway_memory.RTP_RANGE,
)
ALL = (*PLANS, BENCH, BENCH_GATEWAY_MEMORY)


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """This machine's ephemeral ports (the Linux default where /proc cannot say)."""
    try:
        low, high = (int(n) for n in path.read_text().split())
    except (OSError, ValueError):
        low, high = FALLBACK_EPHEMERAL
    return range(low, high + 1)


def taken(plan: StackPorts) -> dict[int, str]:
    """Every port of a stack (listening, standby ACD, RTP range) -> what takes it."""
    out = {port: name for name, port in plan.listening().items()}
    if plan.rtp is not None:
        out |= {port: "RTP" for port in range(plan.rtp[0], plan.rtp[1] + 1)}
    return out


def clashes(a: StackPorts, b: StackPorts) -> list[str]:
    ta, tb = taken(a), taken(b)
    return [f"{p}: {a.name} {ta[p]} / {b.name} {tb[p]}" for p in sorted(ta.keys() & tb.keys())]


def in_ephemeral(plan: StackPorts, ephemeral: range) -> list[str]:
    return [f"{plan.name} {what} {p}" for p, what in sorted(taken(plan).items()) if p in ephemeral]


@pytest.mark.parametrize("a, b", list(itertools.combinations(ALL, 2)), ids=lambda p: p.name)
def test_no_two_stacks_share_a_port(a: StackPorts, b: StackPorts) -> None:
    assert not clashes(a, b)


@pytest.mark.parametrize("plan", ALL, ids=lambda p: p.name)
def test_no_port_lies_in_the_ephemeral_range_or_below_1024(plan: StackPorts) -> None:
    assert not in_ephemeral(plan, ephemeral_range())
    assert all(1024 < p < 65536 for p in taken(plan)), plan
    listening = list(plan.listening().values())
    assert len(set(listening)) == len(listening), f"a port twice within {plan.name}"
    if plan.rtp is not None:
        low, high = plan.rtp
        assert low < high and not set(listening) & set(range(low, high + 1)), plan


def test_a_port_added_in_the_ephemeral_range_is_caught(tmp_path: Path) -> None:
    """The checks above fail for a plan like the old ones (gRPC on 51051, RTP 33000-33499),
    and the ephemeral range falls back to Linux's default when /proc cannot tell."""
    old = StackPorts("old", {"ACD_GRPC_PORT": 51052, "SIP": 15060}, (33000, 33499))
    ephemeral = ephemeral_range(tmp_path / "missing")
    assert ephemeral == range(32768, 61000)
    assert in_ephemeral(old, ephemeral) == [f"old RTP {p}" for p in range(33000, 33500)] + [
        "old ACD_GRPC_PORT 51052"
    ]
    (tmp_path / "range").write_text("40000\t45000\n")
    assert in_ephemeral(old, ephemeral_range(tmp_path / "range")) == []
    shared = StackPorts("shared", {"SIP": ports.E2E["SIP"]}, None)
    assert clashes(ports.E2E, shared) == [f"{ports.E2E['SIP']}: e2e platform SIP / shared SIP"]


def test_every_acd_stack_reserves_the_standby_ports() -> None:
    for plan in ALL:
        if "ACD_GRPC_PORT" in plan.ports and plan is not BENCH:
            assert set(plan.standby) == {"ACD_STANDBY_GRPC_PORT", "ACD_STANDBY_METRICS_PORT"}


def test_the_kube_play_values_are_the_plans() -> None:
    """The chart's podman values put the host-network gateway on DEPLOY_KUBE_PLAY's ports."""
    values = yaml.safe_load(PODMAN_VALUES.read_text())
    gateway, plan = values["gateway"], ports.DEPLOY_KUBE_PLAY
    assert {
        "SIP": gateway["sip"]["port"],
        "GATEWAY_GRPC_PORT": values["ports"]["grpc"]["gateway"],
        "GATEWAY_METRICS_PORT": values["ports"]["metrics"]["gateway"],
        "SIM_CONTROL_PORT": gateway["analog"]["simControlPort"],
    } == plan.ports
    assert (gateway["rtp"]["low"], gateway["rtp"]["high"]) == plan.rtp


def test_the_env_of_a_plan_names_every_port() -> None:
    env = ports.hotline_env(ports.GATEWAY_RESTART)
    assert env["HOTLINE_SIP_PORT"] == str(ports.GATEWAY_RESTART["SIP"])
    assert env["HOTLINE_ACD_GRPC_PORT"] == str(ports.GATEWAY_RESTART["ACD_GRPC_PORT"])
    assert (env["HOTLINE_RTP_LOW"], env["HOTLINE_RTP_HIGH"]) == ("28100", "28199")
    assert "HOTLINE_KAFKA" not in env and "HOTLINE_HTTP_PORT" not in env
