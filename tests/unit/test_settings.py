"""Settings from HOTLINE_* variables: DESIGN.md's defaults, overrides, and errors that name
the bad variable."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from common.settings import REPO_ROOT, SERVICES, Settings, SettingsError, load


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HOTLINE_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_design_ports() -> None:
    s = load()
    assert SERVICES == ("gateway", "acd", "ivr", "crm", "recorder")
    assert s.grpc_ports == {"gateway": 50051, "acd": 50052, "ivr": 50053, "crm": 50054,
                            "recorder": 50055}
    assert s.metrics_ports == {"gateway": 9101, "acd": 9102, "ivr": 9103, "crm": 9104,
                               "recorder": 9105}
    assert s.grpc_hosts == dict.fromkeys(SERVICES, "127.0.0.1")
    assert (s.sip_host, s.sip_port) == ("127.0.0.1", 5060)
    assert (s.rtp_low, s.rtp_high) == (20000, 20999)
    assert s.http_port == 8080
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.site == "local" and s.bind_host == "127.0.0.1" and s.log_level == "INFO"
    assert (s.ring_timeout_s, s.wrap_up_s) == (15.0, 10.0)
    assert s.var_dir == REPO_ROOT / "var"
    assert s.grpc_target("acd") == "127.0.0.1:50052"
    assert s.grpc_target("recorder") == "127.0.0.1:50055"
    assert s.db_url("crm") == f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'crm.sqlite'}"


def test_dataclass_defaults_match_load() -> None:
    plain, loaded = Settings(), load()
    for name in ("site", "kafka_bootstrap", "var_dir", "sip_port", "rtp_low", "rtp_high",
                 "http_port", "ring_timeout_s", "wrap_up_s", "database_url"):
        assert getattr(plain, name) == getattr(loaded, name), name


def test_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {"SITE": "paris", "KAFKA_BOOTSTRAP": "kafka:9093", "ACD_GRPC_PORT": "6002",
           "CRM_METRICS_PORT": "7104", "ACD_HOST": "acd.svc", "SIP_PORT": "15060",
           "RTP_LOW": "30000", "RTP_HIGH": "30100", "HTTP_PORT": "18080", "LOG_LEVEL": "debug",
           "RING_TIMEOUT_S": "4.5", "WRAP_UP_S": "2", "VAR_DIR": str(tmp_path),
           "BIND_HOST": "0.0.0.0"}
    for k, v in env.items():
        monkeypatch.setenv(f"HOTLINE_{k}", v)
    s = load()
    assert (s.site, s.kafka_bootstrap, s.sip_port, s.http_port) == ("paris", "kafka:9093",
                                                                    15060, 18080)
    assert s.grpc_ports["acd"] == 6002 and s.grpc_ports["gateway"] == 50051
    assert s.metrics_ports["crm"] == 7104 and s.metrics_ports["acd"] == 9102
    assert s.grpc_target("acd") == "acd.svc:6002"
    assert (s.rtp_low, s.rtp_high) == (30000, 30100)
    assert s.log_level == "DEBUG"
    assert (s.ring_timeout_s, s.wrap_up_s) == (4.5, 2.0)
    assert s.var_dir == tmp_path and s.bind_host == "0.0.0.0"
    assert s.db_url("acd") == f"sqlite+aiosqlite:///{tmp_path / 'acd.sqlite'}"


def test_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_DATABASE_URL", "postgresql+asyncpg://u@db/hotline")
    assert load().db_url("crm") == "postgresql+asyncpg://u@db/hotline"


def test_a_service_database_url_wins_over_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_DATABASE_URL", "postgresql+asyncpg://u@db/hotline")
    monkeypatch.setenv("HOTLINE_CRM_DATABASE_URL", "postgresql+asyncpg://u@db/crm")
    s = load()
    assert s.db_url("crm") == "postgresql+asyncpg://u@db/crm"
    assert s.db_url("recorder") == "postgresql+asyncpg://u@db/hotline"


@pytest.mark.parametrize("name", ["SIP_PORT", "HTTP_PORT", "GATEWAY_GRPC_PORT",
                                  "RECORDER_GRPC_PORT", "IVR_METRICS_PORT", "RTP_LOW", "RTP_HIGH"])
@pytest.mark.parametrize("value", ["abc", "50 51", "5060.5", ""])
def test_bad_integer_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                        value: str) -> None:
    monkeypatch.setenv(f"HOTLINE_{name}", value)
    with pytest.raises(SettingsError) as info:
        load()
    assert str(info.value) == f"HOTLINE_{name}={value!r} is not an integer"


@pytest.mark.parametrize("name", ["RING_TIMEOUT_S", "WRAP_UP_S"])
def test_bad_number_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(f"HOTLINE_{name}", "ten")
    with pytest.raises(SettingsError, match=f"HOTLINE_{name}='ten' is not a number"):
        load()


@pytest.mark.parametrize(("low", "high"), [("21000", "20999"), ("20000", "20000"),
                                           ("80", "20999"), ("20000", "70000")])
def test_bad_rtp_range(monkeypatch: pytest.MonkeyPatch, low: str, high: str) -> None:
    monkeypatch.setenv("HOTLINE_RTP_LOW", low)
    monkeypatch.setenv("HOTLINE_RTP_HIGH", high)
    with pytest.raises(SettingsError, match=f"HOTLINE_RTP_LOW/HIGH={low}/{high}"):
        load()


def test_settings_error_is_a_value_error_and_settings_are_frozen() -> None:
    assert issubclass(SettingsError, ValueError)
    with pytest.raises(dataclasses.FrozenInstanceError):
        load().sip_port = 1  # type: ignore[misc]
