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
import re
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

_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
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


def _token(env: Env, name: str) -> str:
    """A secret read from the file the variable names ("" when unset)."""
    path = env.optional_path(name)
    if path is None:
        return ""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise env.error(name, str(path), f"cannot be read: {exc}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise env.error(name, str(path), "must hold one token of at least 16 characters, no spaces")
    return token


def _event_loop(env: Env) -> str:
    value = env.text("EVENT_LOOP", "auto").strip().lower()
    if value not in ("auto", "asyncio", "uvloop"):
        raise env.error("EVENT_LOOP", value, "is not auto, asyncio or uvloop")
    if value == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise env.error("EVENT_LOOP", value, "needs the uvloop package installed") from None
    return value


def _fetch_wait(env: Env) -> int:
    value = env.integer("KAFKA_FETCH_WAIT_MS", 20)
    if not 1 <= value <= 10_000:
        raise env.error("KAFKA_FETCH_WAIT_MS", str(value), "must be 1-10000 (milliseconds)")
    return value


def _otlp_endpoint(env: Env) -> str:
    raw = env.text("OTLP_ENDPOINT", "").strip()
    if raw and not re.match(r"^https?://[^/\s]+(:\d+)?/?$", raw):
        raise env.error("OTLP_ENDPOINT", raw, "must be http://host:port or https://host:port")
    return raw


@dataclass(frozen=True)
class Settings:
    """What every service needs: its site, the broker, its peers, its files, logs and traces.

    Subclasses add a service's own fields (all with defaults) and extend `read`.
    """

    site: str = "local"
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: HOTLINE_KAFKA_FETCH_WAIT_MS: how long a consumer's fetch waits at the broker for data.
    #: Tansu answers a fetch only when this runs out, so it is the event hop's latency there
    #: (Apache Kafka answers as soon as data arrives); docs/performance.md
    kafka_fetch_wait_ms: int = 20
    var_dir: Path = REPO_ROOT / "var"
    bind_host: str = "127.0.0.1"
    grpc_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    grpc_hosts: dict[str, str] = field(default_factory=dict)
    grpc_targets: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    trace_console: bool = False
    #: HOTLINE_EVENT_LOOP: auto (uvloop when installed, else asyncio), asyncio (the standard
    #: loop) or uvloop (libuv; must be installed); docs/performance.md has what each measured
    event_loop: str = "auto"
    otlp_endpoint: str = ""  # HOTLINE_OTLP_ENDPOINT: OpenTelemetry collector (OTLP/gRPC)
    drain_s: float = 30.0  # HOTLINE_DRAIN_S: how long SIGTERM lets live work finish
    database_url: str = ""
    service_database_urls: dict[str, str] = field(default_factory=dict)
    #: gRPC mutual TLS (docs/security.md): a CA and this service's certificate and key; empty
    #: paths mean `<tls_dir>/ca.crt`, `<tls_dir>/<service>.crt`, `<tls_dir>/<service>.key`.
    tls_dir: Path = REPO_ROOT / "var" / "tls"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_trust_domain: str = "hotline"
    #: development only: plain-text gRPC, no caller authentication (HOTLINE_GRPC_INSECURE).
    grpc_insecure: bool = False
    #: /metrics needs `Authorization: Bearer <this>` when set (HOTLINE_METRICS_TOKEN_FILE)
    metrics_token: str = field(default="", repr=False)

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
        var_dir = env.path("VAR_DIR", REPO_ROOT / "var")
        trust_domain = env.text("TLS_TRUST_DOMAIN", "hotline")
        if not _TRUST_DOMAIN.match(trust_domain):
            raise env.error(
                "TLS_TRUST_DOMAIN",
                trust_domain,
                "is not a trust domain (lower-case letters, digits, '.', '-', '_')",
            )
        return {
            "site": env.text("SITE", "local"),
            "kafka_bootstrap": env.text("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            "kafka_fetch_wait_ms": _fetch_wait(env),
            "var_dir": var_dir,
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
            "event_loop": _event_loop(env),
            "otlp_endpoint": _otlp_endpoint(env),
            "drain_s": env.number("DRAIN_S", 30.0, minimum=0.0),
            "database_url": env.text("DATABASE_URL", ""),
            "service_database_urls": {s: url for s, url in own_urls.items() if url},
            "tls_dir": env.path("TLS_DIR", var_dir / "tls"),
            "tls_ca": env.optional_path("TLS_CA"),
            "tls_cert": env.optional_path("TLS_CERT"),
            "tls_key": env.optional_path("TLS_KEY"),
            "tls_trust_domain": trust_domain,
            "grpc_insecure": env.flag("GRPC_INSECURE"),
            "metrics_token": _token(env, "METRICS_TOKEN_FILE"),
        }

    def tls_files(self, service: str) -> tuple[Path, Path, Path]:
        """(CA, certificate, key) paths `service` uses for gRPC mutual TLS."""
        return (
            self.tls_ca or self.tls_dir / "ca.crt",
            self.tls_cert or self.tls_dir / f"{service}.crt",
            self.tls_key or self.tls_dir / f"{service}.key",
        )

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
