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

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        return super().read(env) | {"http_port": env.port("HTTP_PORT", 8080)}
