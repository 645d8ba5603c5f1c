"""Settings from the environment (`HOTLINE_*`), with the local-stack defaults of DESIGN.md.

One frozen dataclass so every service reads configuration the same way and a typo in a
variable's value fails at start with a message that names the variable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(ValueError):
    """A HOTLINE_* variable has a value we cannot use."""


def _env(name: str, default: str) -> str:
    return os.environ.get(f"HOTLINE_{name}", default)


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"HOTLINE_{name}={raw!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"HOTLINE_{name}={raw!r} is not a number") from None


SERVICES = ("gateway", "acd", "ivr", "crm", "recorder")


@dataclass(frozen=True)
class Settings:
    """Everything a service needs to find its peers and its own resources."""

    site: str = "local"
    kafka_bootstrap: str = "127.0.0.1:9092"
    var_dir: Path = REPO_ROOT / "var"
    bind_host: str = "127.0.0.1"
    grpc_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    grpc_hosts: dict[str, str] = field(default_factory=dict)
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    rtp_low: int = 20000
    rtp_high: int = 20999
    http_port: int = 8080
    log_level: str = "INFO"
    ring_timeout_s: float = 15.0
    wrap_up_s: float = 10.0
    database_url: str = ""

    def grpc_target(self, service: str) -> str:
        """host:port where `service` serves gRPC."""
        return f"{self.grpc_hosts[service]}:{self.grpc_ports[service]}"

    def db_url(self, service: str) -> str:
        """The service's own database: HOTLINE_<SVC>_DATABASE_URL, else HOTLINE_DATABASE_URL,
        else a SQLite file under var/. Services never share tables: each owns its data."""
        own = os.environ.get(f"HOTLINE_{service.upper()}_DATABASE_URL")
        if own:
            return own
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.var_dir / (service + '.sqlite')}"


def load() -> Settings:
    """Read the environment once; raise SettingsError naming the bad variable."""
    grpc_defaults = dict(zip(SERVICES, (50051, 50052, 50053, 50054, 50055)))
    metrics_defaults = dict(zip(SERVICES, (9101, 9102, 9103, 9104, 9105)))
    grpc_ports = {s: _env_int(f"{s.upper()}_GRPC_PORT", p) for s, p in grpc_defaults.items()}
    metrics_ports = {s: _env_int(f"{s.upper()}_METRICS_PORT", p) for s, p in metrics_defaults.items()}
    grpc_hosts = {s: _env(f"{s.upper()}_HOST", "127.0.0.1") for s in SERVICES}
    rtp_low, rtp_high = _env_int("RTP_LOW", 20000), _env_int("RTP_HIGH", 20999)
    if not 1024 <= rtp_low < rtp_high <= 65535:
        raise SettingsError(f"HOTLINE_RTP_LOW/HIGH={rtp_low}/{rtp_high} is not a valid port range")
    return Settings(
        site=_env("SITE", "local"),
        kafka_bootstrap=_env("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        var_dir=Path(_env("VAR_DIR", str(REPO_ROOT / "var"))),
        bind_host=_env("BIND_HOST", "127.0.0.1"),
        grpc_ports=grpc_ports,
        metrics_ports=metrics_ports,
        grpc_hosts=grpc_hosts,
        sip_host=_env("SIP_HOST", "127.0.0.1"),
        sip_port=_env_int("SIP_PORT", 5060),
        rtp_low=rtp_low,
        rtp_high=rtp_high,
        http_port=_env_int("HTTP_PORT", 8080),
        log_level=_env("LOG_LEVEL", "INFO").upper(),
        ring_timeout_s=_env_float("RING_TIMEOUT_S", 15.0),
        wrap_up_s=_env_float("WRAP_UP_S", 10.0),
        database_url=_env("DATABASE_URL", ""),
    )
