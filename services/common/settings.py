"""Settings from the environment (`HOTLINE_*`), with the local-stack defaults of DESIGN.md.

`Settings` is the base every service shares: where the broker, the peers and the service's
own files are, how it logs and traces, and which database it owns. Each service extends it
with a frozen dataclass of its own in `<service>/settings.py` (`GatewaySettings`,
`AcdSettings`, ...); those modules and this one are the only readers of `HOTLINE_*`.

Reading goes through `Env`, so a bad value fails at start with a `SettingsError` that names
the variable and says what was expected, and so tests can hand in a plain mapping instead of
patching the process environment.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVICES = ("gateway", "acd", "ivr", "crm", "recorder")
GRPC_PORTS = dict(zip(SERVICES, (50051, 50052, 50053, 50054, 50055), strict=True))
METRICS_PORTS = dict(zip(SERVICES, (9101, 9102, 9103, 9104, 9105), strict=True))
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: what the logging module accepts: LOG_LEVELS and its aliases (WARN, FATAL, NOTSET)
_LOG_LEVEL_NAMES = frozenset(logging.getLevelNamesMapping())

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """A HOTLINE_* variable has a value we cannot use."""


class Env:
    """Typed reads of `HOTLINE_<name>` from one mapping (the process environment by default).

    Every reader takes the name without its `HOTLINE_` prefix and the default used when the
    variable is not set; a value it cannot use raises `SettingsError` naming the variable.
    """

    PREFIX = "HOTLINE_"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def var(self, name: str) -> str:
        return f"{self.PREFIX}{name}"

    def raw(self, name: str) -> str | None:
        """The value as set, or None when the variable is not set."""
        return self.environ.get(self.var(name))

    def error(self, name: str, value: str, problem: str) -> SettingsError:
        """`HOTLINE_<name>=<value!r> <problem>`, the one shape of every settings error."""
        return SettingsError(f"{self.var(name)}={value!r} {problem}")

    def foreign(self, name: str, default: str = "") -> str:
        """A variable outside Hotline's namespace, by its full name (e.g. the
        KUBERNETES_SERVICE_HOST kubelet sets in every pod)."""
        return self.environ.get(name, default)

    def text(self, name: str, default: str) -> str:
        raw = self.raw(name)
        return default if raw is None else raw

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name, str(default))
        try:
            return int(raw)
        except ValueError:
            raise self.error(name, raw, "is not an integer") from None

    def port(self, name: str, default: int) -> int:
        """A TCP/UDP port number, 1-65535."""
        value = self.integer(name, default)
        if not 1 <= value <= 65535:
            raise self.error(name, self.text(name, str(default)), "is not a port (1-65535)")
        return value

    def number(
        self, name: str, default: float, *, minimum: float | None = None, above: float | None = None
    ) -> float:
        """A finite float; `minimum` is inclusive, `above` exclusive."""
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise self.error(name, raw, "is not a number") from None
        if not math.isfinite(value):
            raise self.error(name, raw, "is not a finite number")
        if minimum is not None and value < minimum:
            raise self.error(name, raw, f"must be at least {minimum:g}")
        if above is not None and value <= above:
            raise self.error(name, raw, f"must be greater than {above:g}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean: 1/true/yes/on or 0/false/no/off (any case); empty means false."""
        raw = self.raw(name)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise self.error(name, raw, "is not a boolean (1/0, true/false, yes/no, on/off)")

    def items(self, name: str, default: str) -> tuple[str, ...]:
        """A comma-separated list; blanks around and empty items are dropped."""
        return tuple(x.strip() for x in self.text(name, default).split(",") if x.strip())

    def path(self, name: str, default: Path) -> Path:
        raw = self.raw(name)
        return default if raw is None or not raw.strip() else Path(raw)

    def optional_path(self, name: str) -> Path | None:
        """A path, or None when the variable is unset or empty."""
        raw = self.raw(name)
        return Path(raw) if raw and raw.strip() else None

    def networks(self, name: str, default: str) -> tuple[str, ...]:
        """A comma-separated list of IP networks in CIDR notation (a bare address is a /32 or
        /128); the values are kept as written."""
        raw = self.text(name, default)
        nets = self.items(name, default)
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise self.error(
                    name,
                    raw,
                    f"has {net!r}, which is not an IP network (CIDR such as 10.0.0.0/8 or ::1/128)",
                ) from None
        return nets


@dataclass(frozen=True)
class Settings:
    """What every service needs: its site, the broker, its peers, its files, logs and traces.

    Subclasses add a service's own fields (all with defaults) and extend `read`.
    """

    site: str = "local"
    kafka_bootstrap: str = "127.0.0.1:9092"
    var_dir: Path = REPO_ROOT / "var"
    bind_host: str = "127.0.0.1"
    grpc_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    grpc_hosts: dict[str, str] = field(default_factory=dict)
    grpc_targets: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    trace_console: bool = False
    database_url: str = ""
    service_database_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the environment (or `environ`) once; raise SettingsError naming a bad variable."""
        return cls(**cls.read(Env(environ)))

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        """The constructor arguments of this class, read from `env`."""
        level = env.text("LOG_LEVEL", "INFO").upper()
        if level not in _LOG_LEVEL_NAMES:
            raise env.error(
                "LOG_LEVEL",
                env.text("LOG_LEVEL", ""),
                f"is not a log level ({', '.join(LOG_LEVELS)})",
            )
        own_urls = {s: env.text(f"{s.upper()}_DATABASE_URL", "") for s in SERVICES}
        return {
            "site": env.text("SITE", "local"),
            "kafka_bootstrap": env.text("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            "var_dir": env.path("VAR_DIR", REPO_ROOT / "var"),
            "bind_host": env.text("BIND_HOST", "127.0.0.1"),
            "grpc_ports": {s: env.port(f"{s.upper()}_GRPC_PORT", p) for s, p in GRPC_PORTS.items()},
            "metrics_ports": {
                s: env.port(f"{s.upper()}_METRICS_PORT", p) for s, p in METRICS_PORTS.items()
            },
            "grpc_hosts": {s: env.text(f"{s.upper()}_HOST", "127.0.0.1") for s in SERVICES},
            "grpc_targets": {
                s: target for s in SERVICES if (target := env.text(f"{s.upper()}_TARGET", ""))
            },
            "log_level": level,
            "trace_console": env.flag("TRACE_CONSOLE"),
            "database_url": env.text("DATABASE_URL", ""),
            "service_database_urls": {s: url for s, url in own_urls.items() if url},
        }

    def grpc_target(self, service: str) -> str:
        """Where `service` serves gRPC: HOTLINE_<SVC>_TARGET as given (any gRPC target, e.g.
        `ipv4:127.0.0.1:50052,127.0.0.1:50062`: every replica, the one serving is used),
        else host:port."""
        if target := self.grpc_targets.get(service):
            return target
        return f"{self.grpc_hosts[service]}:{self.grpc_ports[service]}"

    def db_url(self, service: str) -> str:
        """The service's own database: HOTLINE_<SVC>_DATABASE_URL, else HOTLINE_DATABASE_URL,
        else a SQLite file under var/. Services never share tables: each owns its data."""
        own = self.service_database_urls.get(service)
        if own:
            return own
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.var_dir / (service + '.sqlite')}"
