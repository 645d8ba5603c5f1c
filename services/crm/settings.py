"""The CRM's settings: the port of its REST API and agent desktop (its database URL is
resolved by the shared base, `Settings.db_url("crm")`).

With `common.settings` the only reader of `HOTLINE_*` for the CRM. docs/configuration.md lists
every variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.settings import Env, Settings


@dataclass(frozen=True)
class CrmSettings(Settings):
    http_port: int = 8080  # HOTLINE_HTTP_PORT: REST API, websocket, desktop
    login_attempts_per_minute: int = 30  # HOTLINE_LOGIN_ATTEMPTS_PER_MINUTE, per address
    login_max_hashes: int = 2  # HOTLINE_LOGIN_MAX_HASHES: password hashes at once
    trusted_proxies: tuple[str, ...] = ()  # HOTLINE_TRUSTED_PROXIES: X-Forwarded-For from

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        attempts = env.integer("LOGIN_ATTEMPTS_PER_MINUTE", 30)
        if attempts < 1:
            raise env.error("LOGIN_ATTEMPTS_PER_MINUTE", str(attempts), "must be at least 1")
        hashes = env.integer("LOGIN_MAX_HASHES", 2)
        if not 1 <= hashes <= 64:
            raise env.error("LOGIN_MAX_HASHES", str(hashes), "must be 1 to 64")
        return super().read(env) | {
            "http_port": env.port("HTTP_PORT", 8080),
            "login_attempts_per_minute": attempts,
            "login_max_hashes": hashes,
            "trusted_proxies": env.networks("TRUSTED_PROXIES", ""),
        }
