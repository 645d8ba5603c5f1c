"""Settings from HOTLINE_* variables: DESIGN.md's defaults, overrides, and errors that name
the bad variable — for the shared base and each service's own settings class."""

from __future__ import annotations

import ast
import dataclasses
import os
import socket
from pathlib import Path

import pytest

from acd.settings import AcdSettings
from common import service
from common.settings import REPO_ROOT, SERVICES, Env, Settings, SettingsError
from crm.settings import CrmSettings
from gateway.analog.config import CardSpec, open_card, parse_card_spec
from gateway.analog.sim import SimCard
from gateway.capacity import machine_limits
from gateway.directory import DEMO_EXTENSIONS, DirectoryError, load_directory
from gateway.media.clock import FrameClock
from gateway.settings import GatewaySettings
from gateway.sip.digest import ha1
from ivr.flows import DEFAULT_FLOWS
from ivr.settings import IvrSettings
from recorder.settings import RecorderSettings

CLASSES = (Settings, GatewaySettings, AcdSettings, IvrSettings, CrmSettings, RecorderSettings)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HOTLINE_"):
            monkeypatch.delenv(name)


def env(**values: str) -> dict[str, str]:
    """An environment mapping with HOTLINE_ prefixed to each name."""
    return {f"HOTLINE_{k}": v for k, v in values.items()}


# ---- defaults ----------------------------------------------------------------------------
def test_defaults_are_the_design_ports() -> None:
    s = Settings.from_env()
    assert SERVICES == ("gateway", "acd", "ivr", "crm", "recorder")
    assert s.grpc_ports == {
        "gateway": 50051,
        "acd": 50052,
        "ivr": 50053,
        "crm": 50054,
        "recorder": 50055,
    }
    assert s.metrics_ports == {
        "gateway": 9101,
        "acd": 9102,
        "ivr": 9103,
        "crm": 9104,
        "recorder": 9105,
    }
    assert s.grpc_hosts == dict.fromkeys(SERVICES, "127.0.0.1")
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.site == "local" and s.bind_host == "127.0.0.1" and s.log_level == "INFO"
    assert s.trace_console is False
    assert s.var_dir == REPO_ROOT / "var"
    assert s.grpc_target("acd") == "127.0.0.1:50052"
    assert s.grpc_target("recorder") == "127.0.0.1:50055"
    assert s.db_url("crm") == f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'crm.sqlite'}"

    g = GatewaySettings.from_env()
    assert (g.sip_host, g.sip_port) == ("127.0.0.1", 5060)
    assert (g.rtp_low, g.rtp_high) == (20000, 25999)
    assert g.sip_realm == "hotline"
    assert g.prompt_dir == REPO_ROOT / "var" / "prompts"
    assert g.trunk_dids == ("10000", "10001")
    assert g.trunk_allow == ("127.0.0.0/8", "::1/128")
    assert g.analog_card == CardSpec("sim", ports=4) and str(g.analog_card) == "sim:4"
    assert (g.analog_law, g.analog_did, g.sim_control_port) == ("alaw", "10000", 9110)
    assert g.extensions_file is None

    a = AcdSettings.from_env()
    assert a.queues == ("sales", "support")
    assert (a.ring_timeout_s, a.wrap_up_s, a.short_abandon_s) == (15.0, 60.0, 5.0)
    assert IvrSettings.from_env().flows_file == DEFAULT_FLOWS
    assert CrmSettings.from_env().http_port == 8080
    assert RecorderSettings.from_env().recordings_dir == REPO_ROOT / "var" / "recordings"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_dataclass_defaults_match_from_env(cls: type[Settings]) -> None:
    plain, loaded = cls(), cls.from_env()
    for f in dataclasses.fields(cls):
        if f.name in ("grpc_ports", "metrics_ports", "grpc_hosts", "grpc_targets"):
            continue  # empty in a hand-made instance: tests give only what they use
        assert getattr(plain, f.name) == getattr(loaded, f.name), f.name


def test_every_service_has_its_settings_class_on_the_base() -> None:
    for cls in CLASSES[1:]:
        assert issubclass(cls, Settings) and dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    # the base knows no service's own fields
    base = {f.name for f in dataclasses.fields(Settings)}
    assert not base & {
        "sip_host",
        "sip_port",
        "rtp_low",
        "rtp_high",
        "http_port",
        "ring_timeout_s",
        "wrap_up_s",
        "queues",
        "flows_file",
    }


# ---- overrides ---------------------------------------------------------------------------
def test_base_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "SITE": "paris",
        "KAFKA_BOOTSTRAP": "kafka:9093",
        "ACD_GRPC_PORT": "6002",
        "CRM_METRICS_PORT": "7104",
        "ACD_HOST": "acd.svc",
        "LOG_LEVEL": "debug",
        "VAR_DIR": str(tmp_path),
        "BIND_HOST": "0.0.0.0",
        "TRACE_CONSOLE": "1",
    }
    for k, v in values.items():
        monkeypatch.setenv(f"HOTLINE_{k}", v)
    for cls in CLASSES:  # every service reads the shared part the same way
        s = cls.from_env()
        assert (s.site, s.kafka_bootstrap) == ("paris", "kafka:9093")
        assert s.grpc_ports["acd"] == 6002 and s.grpc_ports["gateway"] == 50051
        assert s.metrics_ports["crm"] == 7104 and s.metrics_ports["acd"] == 9102
        assert s.grpc_target("acd") == "acd.svc:6002"
        assert s.log_level == "DEBUG" and s.trace_console is True
        assert s.var_dir == tmp_path and s.bind_host == "0.0.0.0"
        assert s.db_url("acd") == f"sqlite+aiosqlite:///{tmp_path / 'acd.sqlite'}"


def test_a_grpc_target_may_name_every_replica() -> None:
    s = Settings.from_env(env(ACD_TARGET="ipv4:127.0.0.1:50052,127.0.0.1:50062", ACD_HOST="x"))
    assert s.grpc_target("acd") == "ipv4:127.0.0.1:50052,127.0.0.1:50062"
    assert s.grpc_target("crm") == "127.0.0.1:50054"
    assert Settings.from_env(env(ACD_TARGET="")).grpc_target("acd") == "127.0.0.1:50052"


def test_gateway_overrides(tmp_path: Path) -> None:
    g = GatewaySettings.from_env(
        env(
            SIP_HOST="192.0.2.10",
            SIP_PORT="15060",
            RTP_LOW="30000",
            RTP_HIGH="30100",
            SIP_REALM="pbx.example",
            PROMPT_DIR=str(tmp_path / "p"),
            TRUNK_DIDS=" 10000, +8610123 ,",
            TRUNK_ALLOW="10.0.0.0/8, 192.0.2.7, 2001:db8::/32",
            ANALOG_CARD="dahdi:1,2,3,4",
            ANALOG_LAW="ulaw",
            ANALOG_DID="10001",
            SIM_CONTROL_PORT="19110",
            GATEWAY_EXTENSIONS=str(tmp_path / "ext.yaml"),
        )
    )
    assert (g.sip_host, g.sip_port, g.rtp_low, g.rtp_high) == ("192.0.2.10", 15060, 30000, 30100)
    assert g.sip_realm == "pbx.example" and g.prompt_dir == tmp_path / "p"
    assert g.trunk_dids == ("10000", "+8610123")
    assert g.trunk_allow == ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32")
    assert g.analog_card == CardSpec("dahdi", channels=(1, 2, 3, 4))
    assert (g.analog_law, g.analog_did, g.sim_control_port) == ("ulaw", "10001", 19110)
    assert g.extensions_file == tmp_path / "ext.yaml"


def test_gateway_dial_plan_and_dialout_timeout() -> None:
    g = GatewaySettings.from_env(
        env(DIAL_LOCAL="[2-9][0-9]{7}", DIAL_INTERNATIONAL="", DIALOUT_RING_TIMEOUT_MS="45000")
    )
    assert g.dialout_ring_timeout_ms == 45000
    assert g.dial_plan.classify("62345678") == "local"
    assert g.dial_plan.classify("13800138000") is None  # no longer local
    assert g.dial_plan.classify("0044201234567") is None  # international matches nothing
    assert g.dial_plan.classify("01062345678") == "long_distance"  # the default kept
    with pytest.raises(SettingsError, match="HOTLINE_DIAL_.*local.*bad pattern"):
        GatewaySettings.from_env(env(DIAL_LOCAL="(["))
    with pytest.raises(SettingsError, match="HOTLINE_DIALOUT_RING_TIMEOUT_MS"):
        GatewaySettings.from_env(env(DIALOUT_RING_TIMEOUT_MS="10"))


def test_gateway_flow_owner_timeout() -> None:
    assert GatewaySettings.from_env(env()).flow_owner_timeout_s == 20.0
    assert GatewaySettings.from_env(env(GATEWAY_FLOW_OWNER_TIMEOUT_S="3")).flow_owner_timeout_s == 3
    with pytest.raises(SettingsError, match="HOTLINE_GATEWAY_FLOW_OWNER_TIMEOUT_S"):
        GatewaySettings.from_env(env(GATEWAY_FLOW_OWNER_TIMEOUT_S="0.5"))


def test_gateway_realtime_priority_and_user() -> None:
    g = GatewaySettings.from_env(env())
    assert (g.realtime_priority, g.user) == (0, None)
    g = GatewaySettings.from_env(env(GATEWAY_REALTIME_PRIORITY="10", GATEWAY_USER="10001:20"))
    assert (g.realtime_priority, g.user) == (10, (10001, 20))
    for bad in ("-1", "100", "high"):
        with pytest.raises(SettingsError, match="HOTLINE_GATEWAY_REALTIME_PRIORITY"):
            GatewaySettings.from_env(env(GATEWAY_REALTIME_PRIORITY=bad))
    for bad in ("hotline", "10001", "10001:", "-1:0", "1:2:3"):
        with pytest.raises(SettingsError, match="HOTLINE_GATEWAY_USER.*uid:gid"):
            GatewaySettings.from_env(env(GATEWAY_USER=bad))


def test_gateway_prompts_follow_var_dir_unless_set(tmp_path: Path) -> None:
    assert GatewaySettings.from_env(env(VAR_DIR=str(tmp_path))).prompt_dir == tmp_path / "prompts"
    assert GatewaySettings.from_env(
        env(VAR_DIR=str(tmp_path), PROMPT_DIR="/srv/p")
    ).prompt_dir == Path("/srv/p")


def test_recording_spool_follows_var_dir_unless_set(tmp_path: Path) -> None:
    assert GatewaySettings.from_env().recording_spool == REPO_ROOT / "var" / "spool"
    spool = GatewaySettings.from_env(env(VAR_DIR=str(tmp_path))).recording_spool
    assert spool == tmp_path / "spool"
    assert GatewaySettings.from_env(
        env(VAR_DIR=str(tmp_path), RECORDING_SPOOL="/srv/spool")
    ).recording_spool == Path("/srv/spool")
    assert GatewaySettings.from_env(env(RECORDING_SPOOL=" ")).recording_spool == (
        REPO_ROOT / "var" / "spool"
    )


def test_empty_paths_mean_the_default() -> None:
    g = GatewaySettings.from_env(env(GATEWAY_EXTENSIONS="", PROMPT_DIR=" "))
    assert g.extensions_file is None and g.prompt_dir == REPO_ROOT / "var" / "prompts"
    assert IvrSettings.from_env(env(IVR_FLOWS="")).flows_file == DEFAULT_FLOWS


def test_service_overrides(tmp_path: Path) -> None:
    a = AcdSettings.from_env(
        env(ACD_QUEUES=" sales , vip,,billing ", RING_TIMEOUT_S="4.5", WRAP_UP_S="2")
    )
    assert a.queues == ("sales", "vip", "billing")
    assert (a.ring_timeout_s, a.wrap_up_s) == (4.5, 2.0)
    assert AcdSettings.from_env(env(WRAP_UP_S="0")).wrap_up_s == 0.0  # no after-call work
    assert AcdSettings.from_env(env(SHORT_ABANDON_S="3")).short_abandon_s == 3.0
    with pytest.raises(SettingsError) as info:
        AcdSettings.from_env(env(SHORT_ABANDON_S="-1"))
    assert "HOTLINE_SHORT_ABANDON_S" in str(info.value)
    standby = AcdSettings.from_env(
        env(
            VAR_DIR=str(tmp_path),
            ACD_LEASE_FILE="",
            ACD_MAX_WAIT_S="900",
            ACD_RECONCILE_S="2.5",
            ACD_LEASE_DURATION_S="5",
        )
    )
    assert standby.lease == "file" and standby.lease_path == tmp_path / "acd.lease"
    assert (standby.max_wait_s, standby.reconcile_s, standby.lease_duration_s) == (900, 2.5, 5)
    shared = AcdSettings.from_env(env(ACD_LEASE_FILE=str(tmp_path / "x.lock")))
    assert shared.lease_path == tmp_path / "x.lock"
    kube = AcdSettings.from_env(
        {
            "HOTLINE_ACD_LEASE": "Kubernetes",
            "HOTLINE_ACD_LEASE_NAME": "acd-site2",
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
            "KUBERNETES_SERVICE_PORT": "443",
        }
    )
    assert (kube.lease, kube.lease_name, kube.kube_host, kube.kube_port) == (
        "kubernetes",
        "acd-site2",
        "10.96.0.1",
        "443",
    )
    flows = tmp_path / "flows.yaml"
    assert IvrSettings.from_env(env(IVR_FLOWS=str(flows))).flows_file == flows
    assert IvrSettings.from_env(env()).acd_wait_s == 20.0
    assert IvrSettings.from_env(env()).instance == socket.gethostname()
    assert IvrSettings.from_env(env(IVR_INSTANCE="ivr-7d9f-x2")).instance == "ivr-7d9f-x2"
    assert IvrSettings.from_env(env(IVR_ACD_WAIT_S="7.5")).acd_wait_s == 7.5
    assert CrmSettings.from_env(env(HTTP_PORT="18080")).http_port == 18080
    assert (
        RecorderSettings.from_env(env(VAR_DIR=str(tmp_path))).recordings_dir
        == tmp_path / "recordings"
    )


def test_a_given_mapping_is_read_instead_of_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOTLINE_SITE", "from-process")
    assert Settings.from_env({"HOTLINE_SITE": "from-mapping"}).site == "from-mapping"
    assert Settings.from_env({}).site == "local"
    assert Settings.from_env().site == "from-process"


def test_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_DATABASE_URL", "postgresql+asyncpg://u@db/hotline")
    assert CrmSettings.from_env().db_url("crm") == "postgresql+asyncpg://u@db/hotline"


def test_a_service_database_url_wins_over_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_DATABASE_URL", "postgresql+asyncpg://u@db/hotline")
    monkeypatch.setenv("HOTLINE_CRM_DATABASE_URL", "postgresql+asyncpg://u@db/crm")
    s = Settings.from_env()
    assert s.db_url("crm") == "postgresql+asyncpg://u@db/crm"
    assert s.db_url("recorder") == "postgresql+asyncpg://u@db/hotline"


# ---- errors that name the variable -------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (GatewaySettings, "SIP_PORT"),
        (CrmSettings, "HTTP_PORT"),
        (Settings, "GATEWAY_GRPC_PORT"),
        (RecorderSettings, "RECORDER_GRPC_PORT"),
        (IvrSettings, "IVR_METRICS_PORT"),
        (GatewaySettings, "RTP_LOW"),
        (GatewaySettings, "RTP_HIGH"),
        (GatewaySettings, "SIM_CONTROL_PORT"),
    ],
)
@pytest.mark.parametrize("value", ["abc", "50 51", "5060.5", ""])
def test_bad_integer_names_the_variable(cls: type[Settings], name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        cls.from_env(env(**{name: value}))
    assert str(info.value) == f"HOTLINE_{name}={value!r} is not an integer"


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (GatewaySettings, "SIP_PORT"),
        (CrmSettings, "HTTP_PORT"),
        (Settings, "ACD_GRPC_PORT"),
        (Settings, "CRM_METRICS_PORT"),
        (GatewaySettings, "SIM_CONTROL_PORT"),
    ],
)
@pytest.mark.parametrize("value", ["0", "-1", "65536", "99999"])
def test_port_out_of_range_names_the_variable(cls: type[Settings], name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        cls.from_env(env(**{name: value}))
    assert str(info.value) == f"HOTLINE_{name}={value!r} is not a port (1-65535)"


@pytest.mark.parametrize("value", ["1", "65535"])
def test_port_range_ends_are_accepted(value: str) -> None:
    assert GatewaySettings.from_env(env(SIP_PORT=value)).sip_port == int(value)


@pytest.mark.parametrize("name", ["RING_TIMEOUT_S", "WRAP_UP_S"])
def test_bad_number_names_the_variable(name: str) -> None:
    with pytest.raises(SettingsError, match=f"^HOTLINE_{name}='ten' is not a number$"):
        AcdSettings.from_env(env(**{name: "ten"}))


@pytest.mark.parametrize("name", ["RING_TIMEOUT_S", "WRAP_UP_S"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_number_must_be_finite(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^HOTLINE_{name}='{value}' is not a finite number$"):
        AcdSettings.from_env(env(**{name: value}))


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("RING_TIMEOUT_S", "0", "must be greater than 0"),
        ("RING_TIMEOUT_S", "-2", "must be greater than 0"),
        ("WRAP_UP_S", "-0.5", "must be at least 0"),
    ],
)
def test_timer_out_of_range(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        AcdSettings.from_env(env(**{name: value}))
    assert str(info.value) == f"HOTLINE_{name}={value!r} {problem}"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ACD_LEASE", "zookeeper", "HOTLINE_ACD_LEASE='zookeeper' is not file or kubernetes"),
        (
            "ACD_LEASE",
            "kubernetes",
            "HOTLINE_ACD_LEASE='kubernetes' needs the API server: KUBERNETES_SERVICE_HOST is unset",
        ),
        (
            "ACD_LEASE_DURATION_S",
            "1",
            "HOTLINE_ACD_LEASE_DURATION_S='1' must be at least 2 (seconds: the holder renews "
            "every second)",
        ),
        ("ACD_LEASE_DURATION_S", "2.5", "HOTLINE_ACD_LEASE_DURATION_S='2.5' is not an integer"),
        ("ACD_MAX_WAIT_S", "0", "HOTLINE_ACD_MAX_WAIT_S='0' must be greater than 0"),
        ("ACD_RECONCILE_S", "soon", "HOTLINE_ACD_RECONCILE_S='soon' is not a number"),
    ],
)
def test_bad_acd_takeover_settings(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        AcdSettings.from_env(env(**{name: value}))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "HOTLINE_IVR_ACD_WAIT_S='0' must be greater than 0"),
        ("a while", "HOTLINE_IVR_ACD_WAIT_S='a while' is not a number"),
    ],
)
def test_bad_ivr_acd_wait(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        IvrSettings.from_env(env(IVR_ACD_WAIT_S=value))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("low", "high"), [("21000", "20999"), ("20000", "20000"), ("80", "20999"), ("20000", "70000")]
)
def test_bad_rtp_range(low: str, high: str) -> None:
    with pytest.raises(SettingsError, match=f"HOTLINE_RTP_LOW/HIGH={low}/{high}"):
        GatewaySettings.from_env(env(RTP_LOW=low, RTP_HIGH=high))


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("localhost", "localhost"),
        ("127.0.0.0/8, 10.0.0.300/24", "10.0.0.300/24"),
        ("::1/129", "::1/129"),
    ],
)
def test_trunk_allow_must_be_networks(value: str, bad: str) -> None:
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(env(TRUNK_ALLOW=value))
    assert str(info.value).startswith(
        f"HOTLINE_TRUNK_ALLOW={value!r} has {bad!r}, which is not an IP network"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRUNK_DIDS", "10000,sales"),
        ("TRUNK_DIDS", "100 00"),
        ("ANALOG_DID", "ten"),
        ("ANALOG_DID", ""),
    ],
)
def test_numbers_must_be_digits(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^HOTLINE_{name}={value!r} .*not a number"):
        GatewaySettings.from_env(env(**{name: value}))


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("sim:4", CardSpec("sim", ports=4)),
        ("sim", CardSpec("sim", ports=4)),
        (" sim:64 ", CardSpec("sim", ports=64)),
        ("sim:1", CardSpec("sim", ports=1)),
        ("dahdi:1,2,3,4", CardSpec("dahdi", channels=(1, 2, 3, 4))),
        ("dahdi: 5, 6,", CardSpec("dahdi", channels=(5, 6))),
        ("none", CardSpec("none")),
    ],
)
def test_analog_card_spec(spec: str, parsed: CardSpec) -> None:
    assert parse_card_spec(spec) == parsed
    assert GatewaySettings.from_env(env(ANALOG_CARD=spec)).analog_card == parsed


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("sim:0", "sim needs 1-64 ports, e.g. sim:4"),
        ("sim:65", "sim needs 1-64 ports"),
        ("sim:four", "sim needs 1-64 ports"),
        ("dahdi:", "dahdi needs channel numbers"),
        ("dahdi:a,b", "dahdi needs channel numbers"),
        ("dahdi:0,1", "dahdi needs channel numbers"),
        ("dahdi:1,2,1", "a DAHDI channel is listed twice"),
        ("fxo:4", "expected sim:N, dahdi:CH,... or none"),
        ("", "expected sim:N"),
    ],
)
def test_bad_analog_card_names_the_variable(spec: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(env(ANALOG_CARD=spec))
    assert str(info.value).startswith(f"HOTLINE_ANALOG_CARD={spec.strip()!r}: {problem}")


def test_analog_law() -> None:
    assert GatewaySettings.from_env(env(ANALOG_LAW="ulaw")).analog_law == "ulaw"
    with pytest.raises(
        SettingsError, match="^HOTLINE_ANALOG_LAW='mulaw' is not one of alaw, ulaw$"
    ):
        GatewaySettings.from_env(env(ANALOG_LAW="mulaw"))


@pytest.mark.parametrize("realm", ["", "  ", 'a"b', "a\\b"])
def test_bad_sip_realm(realm: str) -> None:
    with pytest.raises(SettingsError, match="^HOTLINE_SIP_REALM="):
        GatewaySettings.from_env(env(SIP_REALM=realm))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_boolean(value: str, expected: bool) -> None:
    assert Settings.from_env(env(TRACE_CONSOLE=value)).trace_console is expected


@pytest.mark.parametrize("value", ["2", "maybe", "y es"])
def test_bad_boolean_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env(TRACE_CONSOLE=value))
    assert str(info.value) == (
        f"HOTLINE_TRACE_CONSOLE={value!r} is not a boolean (1/0, true/false, yes/no, on/off)"
    )


def test_bad_log_level_names_the_variable() -> None:
    assert Settings.from_env(env(LOG_LEVEL="warning")).log_level == "WARNING"
    assert Settings.from_env(env(LOG_LEVEL="warn")).log_level == "WARN"  # logging's alias
    with pytest.raises(SettingsError, match="^HOTLINE_LOG_LEVEL='verbose' is not a log level"):
        Settings.from_env(env(LOG_LEVEL="verbose"))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "names no queue"),
        (" , ", "names no queue"),
        ("sales,support,sales", "names a queue twice"),
    ],
)
def test_bad_queue_list(value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        AcdSettings.from_env(env(ACD_QUEUES=value))
    assert str(info.value).startswith(f"HOTLINE_ACD_QUEUES={value!r} {problem}")


def test_env_reader_names_the_prefixed_variable() -> None:
    e = Env({"HOTLINE_X": "7"})
    assert (e.var("X"), e.raw("X"), e.raw("Y"), e.integer("X", 1), e.integer("Y", 1)) == (
        "HOTLINE_X",
        "7",
        None,
        7,
        1,
    )


def test_settings_error_is_a_value_error_and_settings_are_frozen() -> None:
    assert issubclass(SettingsError, ValueError)
    with pytest.raises(dataclasses.FrozenInstanceError):
        GatewaySettings.from_env().sip_port = 1  # type: ignore[misc]


def test_run_stops_with_the_message_on_a_bad_setting() -> None:
    started = []

    async def main(settings: Settings, readiness: object) -> None:  # pragma: no cover
        started.append(settings)

    def load() -> AcdSettings:
        return AcdSettings.from_env(env(RING_TIMEOUT_S="soon"))

    with pytest.raises(SystemExit) as info:
        service.run("acd", main, load)  # type: ignore[arg-type]
    assert str(info.value.code) == "acd: HOTLINE_RING_TIMEOUT_S='soon' is not a number"
    assert started == []


# ---- the values reach the code that uses them as arguments -------------------------------
def test_open_card_makes_the_card_of_the_spec() -> None:
    clock = FrameClock()
    card = open_card(parse_card_spec("sim:3"), clock)
    assert isinstance(card, SimCard) and len(card.ports) == 3
    assert open_card(parse_card_spec("none"), clock) is None


def test_directory_comes_from_the_file_given(tmp_path: Path) -> None:
    demo = load_directory("hotline", None)
    assert set(demo) == {str(e) for e in DEMO_EXTENSIONS}
    path = tmp_path / "ext.yaml"
    path.write_text(f"9001: {ha1('9001', 'hotline', 'pw')}\n")
    assert load_directory("hotline", path) == {"9001": ha1("9001", "hotline", "pw")}
    with pytest.raises(DirectoryError, match="cannot read extensions"):
        load_directory("hotline", tmp_path / "missing.yaml")


# ---- nobody else reads HOTLINE_* ---------------------------------------------------------
ALLOWED_READERS = {Path("common/settings.py")}
#: builds its children's environment from the process's (copies it, reads no HOTLINE_ value)
CHILD_ENV_BUILDERS = {Path("common/stack.py")}


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that touch os.environ or call getenv."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id in ("environ", "getenv"):
            lines.append(node.lineno)
    return lines


def test_only_settings_modules_read_the_environment() -> None:
    root = REPO_ROOT / "services"
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "common" and "generated" in rel.parts:
            continue
        lines = _environment_reads(ast.parse(path.read_text(encoding="utf-8")))
        if not lines or rel in ALLOWED_READERS:
            continue
        if rel in CHILD_ENV_BUILDERS:
            source = path.read_text(encoding="utf-8").splitlines()
            if all("dict(os.environ)" in source[n - 1] for n in lines):
                continue
        offenders.append(f"{rel}:{','.join(map(str, lines))}")
    assert offenders == [], "read HOTLINE_* through the service's settings.py instead"


# ---- gRPC mutual TLS ---------------------------------------------------------------------
def test_tls_files_default_to_the_var_dir_per_service() -> None:
    s = Settings.from_env(env(VAR_DIR="/srv/hotline"))
    assert (s.tls_dir, s.tls_trust_domain, s.grpc_insecure) == (
        Path("/srv/hotline/tls"),
        "hotline",
        False,
    )
    assert s.tls_files("acd") == (
        Path("/srv/hotline/tls/ca.crt"),
        Path("/srv/hotline/tls/acd.crt"),
        Path("/srv/hotline/tls/acd.key"),
    )


def test_tls_files_from_a_mounted_secret() -> None:
    s = Settings.from_env(
        env(
            TLS_CA="/etc/hotline/tls/ca.crt",
            TLS_CERT="/etc/hotline/tls/tls.crt",
            TLS_KEY="/etc/hotline/tls/tls.key",
            TLS_TRUST_DOMAIN="site-a.call-center",
            GRPC_INSECURE="yes",
        )
    )
    assert s.tls_files("crm") == (
        Path("/etc/hotline/tls/ca.crt"),
        Path("/etc/hotline/tls/tls.crt"),
        Path("/etc/hotline/tls/tls.key"),
    )
    assert (s.tls_trust_domain, s.grpc_insecure) == ("site-a.call-center", True)


@pytest.mark.parametrize("value", ["", "Hotline", "a/b", "spiffe://x"])
def test_bad_trust_domain_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env(TLS_TRUST_DOMAIN=value))
    assert str(info.value) == (
        f"HOTLINE_TLS_TRUST_DOMAIN={value!r} is not a trust domain "
        "(lower-case letters, digits, '.', '-', '_')"
    )


def test_the_insecure_switch_is_a_boolean() -> None:
    with pytest.raises(SettingsError, match="^HOTLINE_GRPC_INSECURE='please' is not a boolean"):
        Settings.from_env(env(GRPC_INSECURE="please"))


# ---- SIP limits and the sim card's control API --------------------------------------------
def test_sip_limits_defaults_and_overrides() -> None:
    g = GatewaySettings.from_env()
    assert (g.tcp_limits.max_connections, g.tcp_limits.max_per_source) == (512, 32)
    assert (g.tcp_limits.read_timeout_s, g.tcp_limits.idle_timeout_s) == (10.0, 300.0)
    assert g.tcp_limits.max_lifetime_s == 14400.0 and g.tcp_limits.max_message == 65536
    assert (g.admission.source_cps, g.admission.source_burst, g.admission.source_max_calls) == (
        10.0,
        20,
        50,
    )
    assert (g.admission.trunk_cps, g.admission.trunk_max_calls) == (20.0, 100)
    assert (g.admission.gateway_max_calls, g.admission.gateway_cps) == machine_limits(
        20000, 25999
    ), "the gateway's own caps follow the machine unless set"
    assert g.sim_control_host == "127.0.0.1"
    g = GatewaySettings.from_env(
        env(
            SIP_TCP_MAX_CONNECTIONS="100",
            SIP_TCP_MAX_PER_SOURCE="4",
            SIP_TCP_READ_TIMEOUT_S="2.5",
            SIP_TCP_IDLE_TIMEOUT_S="60",
            SIP_TCP_MAX_LIFETIME_S="600",
            CALLS_PER_SOURCE_CPS="0.5",
            CALLS_PER_SOURCE_MAX="3",
            TRUNK_CPS="4",
            TRUNK_MAX_CALLS="8",
            GATEWAY_MAX_CALLS="40",
            GATEWAY_MAX_CPS="2.5",
            GATEWAY_MAX_ANSWER_DELAY_S="0",
            SIM_CONTROL_HOST="::1",
            BIND_HOST="0.0.0.0",
        )
    )
    assert (g.tcp_limits.max_connections, g.tcp_limits.max_per_source) == (100, 4)
    assert (g.tcp_limits.read_timeout_s, g.tcp_limits.max_lifetime_s) == (2.5, 600.0)
    assert (g.admission.source_cps, g.admission.source_burst) == (0.5, 1)
    assert (g.admission.trunk_burst, g.admission.trunk_max_calls) == (8, 8)
    assert (g.admission.gateway_max_calls, g.admission.gateway_cps) == (40, 2.5)
    assert g.admission.gateway_burst == 5
    assert g.admission.max_answer_delay_s == 0
    assert GatewaySettings.from_env(env()).admission.max_answer_delay_s == 2.0
    assert (g.sim_control_host, g.bind_host) == ("::1", "0.0.0.0")


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("SIP_TCP_MAX_CONNECTIONS", "0", "must be at least 1"),
        ("SIP_TCP_MAX_PER_SOURCE", "many", "is not an integer"),
        ("SIP_TCP_READ_TIMEOUT_S", "0", "must be greater than 0"),
        ("SIP_TCP_IDLE_TIMEOUT_S", "-1", "must be greater than 0"),
        ("CALLS_PER_SOURCE_CPS", "0", "must be greater than 0"),
        ("CALLS_PER_SOURCE_MAX", "0", "must be at least 1"),
        ("TRUNK_CPS", "fast", "is not a number"),
        ("TRUNK_MAX_CALLS", "-5", "must be at least 1"),
        ("GATEWAY_MAX_CALLS", "-1", "must be at least 0"),
        ("GATEWAY_MAX_CPS", "lots", "is not a number"),
        ("GATEWAY_MAX_CPS", "-2", "must be at least 0"),
        ("GATEWAY_MAX_ANSWER_DELAY_S", "-1", "must be at least 0"),
    ],
)
def test_bad_sip_limit_names_the_variable(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(env(**{name: value}))
    assert str(info.value) == f"HOTLINE_{name}={value!r} {problem}"


# ---- CRM login limits --------------------------------------------------------------------
def test_crm_login_limits_defaults_and_overrides() -> None:
    c = CrmSettings.from_env()
    assert (c.login_attempts_per_minute, c.login_max_hashes, c.trusted_proxies) == (30, 2, ())
    c = CrmSettings.from_env(
        env(
            LOGIN_ATTEMPTS_PER_MINUTE="120",
            LOGIN_MAX_HASHES="4",
            TRUSTED_PROXIES="10.42.0.0/16, 10.43.0.10",
        )
    )
    assert (c.login_attempts_per_minute, c.login_max_hashes) == (120, 4)
    assert c.trusted_proxies == ("10.42.0.0/16", "10.43.0.10")


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("LOGIN_ATTEMPTS_PER_MINUTE", "0", "must be at least 1"),
        ("LOGIN_ATTEMPTS_PER_MINUTE", "lots", "is not an integer"),
        ("LOGIN_MAX_HASHES", "0", "must be 1 to 64"),
        ("LOGIN_MAX_HASHES", "100", "must be 1 to 64"),
    ],
)
def test_bad_crm_login_limit_names_the_variable(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        CrmSettings.from_env(env(**{name: value}))
    assert str(info.value) == f"HOTLINE_{name}={value!r} {problem}"


def test_bad_trusted_proxy_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="^HOTLINE_TRUSTED_PROXIES='ingress' has 'ingress'"):
        CrmSettings.from_env(env(TRUSTED_PROXIES="ingress"))


def test_metrics_token_from_a_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abcdefghijklmnop0123\n")
    s = Settings.from_env(env(METRICS_TOKEN_FILE=str(token)))
    assert s.metrics_token == "abcdefghijklmnop0123"
    assert "abcdefghijklmnop0123" not in repr(s)
    assert Settings.from_env().metrics_token == ""


def test_bad_metrics_token_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SettingsError, match=f"^HOTLINE_METRICS_TOKEN_FILE='{missing}' cannot be"):
        Settings.from_env(env(METRICS_TOKEN_FILE=str(missing)))
    short = tmp_path / "short"
    short.write_text("tiny")
    with pytest.raises(SettingsError, match="at least 16 characters"):
        Settings.from_env(env(METRICS_TOKEN_FILE=str(short)))


# ---- the carrier trunk (HOTLINE_SIP_TRUNK_*) ---------------------------------------------
def test_no_carrier_trunk_without_a_host() -> None:
    assert GatewaySettings.from_env(env(SIP_TRUNK_USERNAME="ignored")).carrier is None


def test_carrier_trunk_settings(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    g = GatewaySettings.from_env(
        env(
            SIP_TRUNK_HOST="sip.carrier.example",
            SIP_TRUNK_PORT="5080",
            SIP_TRUNK_TRANSPORT="TCP",
            SIP_TRUNK_NAME="carrier-a",
            SIP_TRUNK_DOMAIN="carrier.example",
            SIP_TRUNK_USERNAME="acct",
            SIP_TRUNK_PASSWORD_FILE=str(secret),
            SIP_TRUNK_REGISTER="yes",
            SIP_TRUNK_REGISTER_EXPIRES="600",
            SIP_TRUNK_KEEPALIVE_S="15",
            SIP_TRUNK_NUMBER_IN="+86=>0",
            SIP_TRUNK_NUMBER_OUT="00=>+, 0=>+86",
            SIP_TRUNK_CALLER_ID="+861012345",
            SIP_TRUNK_CODECS="pcma",
            SIP_TRUNK_MAX_CALLS="8",
            SIP_TRUNK_CPS="2.5",
            SIP_TRUNK_TRUST_PAI="no",
            SIP_TRUNK_SESSION_EXPIRES="0",
            TRUNK_TRUST_PAI="on",
        )
    )
    c = g.carrier
    assert c is not None and g.trunk_trust_pai
    assert (c.host, c.port, c.transport, c.name, c.uri_host) == (
        "sip.carrier.example",
        5080,
        "tcp",
        "carrier-a",
        "carrier.example",
    )
    assert (c.username, c.password, c.register, c.register_expires) == ("acct", "s3cret", True, 600)
    assert "s3cret" not in repr(c)
    assert c.number_out.apply("013800138000") == "+8613800138000"
    assert c.number_out.apply("0044201234") == "+44201234"
    assert c.number_in.apply("+8613800138000") == "013800138000"
    assert (c.caller_id, c.codecs, c.max_calls, c.calls_per_second) == (
        "+861012345",
        ("PCMA",),
        8,
        2.5,
    )
    assert (c.keepalive_s, c.trust_pai, c.session_expires) == (15.0, False, 0)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"SIP_TRUNK_TRANSPORT": "tls"}, "HOTLINE_SIP_TRUNK_TRANSPORT='tls' is not udp or tcp"),
        ({"SIP_TRUNK_NAME": "analog"}, "HOTLINE_SIP_TRUNK_NAME='analog' must be"),
        ({"SIP_TRUNK_NAME": "Big Trunk"}, "HOTLINE_SIP_TRUNK_NAME='Big Trunk' must be"),
        ({"SIP_TRUNK_REGISTER": "true"}, "HOTLINE_SIP_TRUNK_REGISTER=true needs"),
        ({"SIP_TRUNK_REGISTER_EXPIRES": "30"}, "REGISTER_EXPIRES='30' must be 60-86400"),
        ({"SIP_TRUNK_NUMBER_OUT": "0=+86"}, "NUMBER_OUT='0=+86' is not a list of prefix=>"),
        ({"SIP_TRUNK_NUMBER_IN": "+86=>0x"}, "NUMBER_IN='+86=>0x' is not a list"),
        ({"SIP_TRUNK_CALLER_ID": "sales"}, "HOTLINE_SIP_TRUNK_CALLER_ID='sales' is not a number"),
        ({"SIP_TRUNK_CODECS": "PCMU,G729"}, "CODECS='PCMU,G729' must list PCMU and/or PCMA once"),
        ({"SIP_TRUNK_CODECS": "PCMU,pcmu"}, "CODECS='PCMU,pcmu' must list PCMU and/or PCMA once"),
        ({"SIP_TRUNK_MAX_CALLS": "0"}, "HOTLINE_SIP_TRUNK_MAX_CALLS='0' must be at least 1"),
        ({"SIP_TRUNK_CPS": "0"}, "HOTLINE_SIP_TRUNK_CPS='0' must be greater than 0"),
        ({"SIP_TRUNK_SESSION_EXPIRES": "60"}, "SESSION_EXPIRES='60' must be 0 (off) or at least"),
        ({"SIP_TRUNK_KEEPALIVE_S": "-1"}, "HOTLINE_SIP_TRUNK_KEEPALIVE_S='-1' must be at least 0"),
        ({"SIP_TRUNK_PORT": "0"}, "HOTLINE_SIP_TRUNK_PORT='0' is not a port"),
        ({"SIP_TRUNK_PASSWORD": "a", "SIP_TRUNK_PASSWORD_FILE": "/x"}, "not both"),
        ({"SIP_TRUNK_PASSWORD_FILE": "/nonexistent/pw"}, "PASSWORD_FILE='/nonexistent/pw' cannot"),
    ],
)
def test_bad_carrier_settings_name_the_variable(values: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(env(SIP_TRUNK_HOST="192.0.2.50", **values))
    assert problem in str(info.value)


def test_kafka_fetch_wait_is_milliseconds_within_bounds() -> None:
    assert Settings.from_env(env()).kafka_fetch_wait_ms == 20
    assert Settings.from_env(env(KAFKA_FETCH_WAIT_MS="500")).kafka_fetch_wait_ms == 500
    for bad, problem in (("0", "must be 1-10000 (milliseconds)"), ("soon", "is not an integer")):
        with pytest.raises(SettingsError) as info:
            Settings.from_env(env(KAFKA_FETCH_WAIT_MS=bad))
        assert str(info.value) == f"HOTLINE_KAFKA_FETCH_WAIT_MS={bad!r} {problem}"


def test_crm_fetch_wait_is_its_own_and_bounded_for_the_screen_pop() -> None:
    assert CrmSettings.from_env(env()).crm_fetch_wait_ms == 100
    # the services' fetch wait does not change the CRM's, nor the other way round
    c = CrmSettings.from_env(env(KAFKA_FETCH_WAIT_MS="20", CRM_FETCH_WAIT_MS="250"))
    assert (c.kafka_fetch_wait_ms, c.crm_fetch_wait_ms) == (20, 250)
    for bad, problem in (
        ("0", "must be 1-1000 (milliseconds)"),
        ("5000", "must be 1-1000 (milliseconds)"),
        ("soon", "is not an integer"),
    ):
        with pytest.raises(SettingsError) as info:
            CrmSettings.from_env(env(CRM_FETCH_WAIT_MS=bad))
        assert str(info.value) == f"HOTLINE_CRM_FETCH_WAIT_MS={bad!r} {problem}"


def test_acd_fetch_wait_follows_the_services_unless_set() -> None:
    assert AcdSettings.from_env(env()).acd_fetch_wait_ms == 20
    assert AcdSettings.from_env(env(KAFKA_FETCH_WAIT_MS="50")).acd_fetch_wait_ms == 50
    a = AcdSettings.from_env(env(KAFKA_FETCH_WAIT_MS="20", ACD_FETCH_WAIT_MS="100"))
    assert (a.kafka_fetch_wait_ms, a.acd_fetch_wait_ms) == (20, 100)
    for bad, problem in (
        ("0", "must be 1-1000 (milliseconds)"),
        ("5000", "must be 1-1000 (milliseconds)"),
        ("soon", "is not an integer"),
    ):
        with pytest.raises(SettingsError) as info:
            AcdSettings.from_env(env(ACD_FETCH_WAIT_MS=bad))
        assert str(info.value) == f"HOTLINE_ACD_FETCH_WAIT_MS={bad!r} {problem}"


def test_event_loop_is_auto_asyncio_or_an_installed_uvloop() -> None:
    assert Settings.from_env(env()).event_loop == "auto"
    assert Settings.from_env(env(EVENT_LOOP="asyncio")).event_loop == "asyncio"
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env(EVENT_LOOP="trio"))
    assert str(info.value) == "HOTLINE_EVENT_LOOP='trio' is not auto, asyncio or uvloop"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        with pytest.raises(SettingsError, match="needs the uvloop package installed"):
            Settings.from_env(env(EVENT_LOOP="uvloop"))
    else:
        assert Settings.from_env(env(EVENT_LOOP="UVLOOP")).event_loop == "uvloop"
