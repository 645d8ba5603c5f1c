"""The CRM's settings: the port of its REST API and agent desktop (its database URL is
resolved by the shared base, `Settings.db_url("crm")`).

With `common.settings` the only reader of `HOTLINE_*` for the CRM. docs/configuration.md lists
every variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.settings import Env, Settings
from crm.dialplan import DEFAULT_TABLE, DialPlanError, parse_table

#: not-ready reasons of the service standards (示忙 with reason), as the ACD receives them.
DEFAULT_NOT_READY_REASONS = "meal,meeting,training,restroom,helping,break,other"


@dataclass(frozen=True)
class CrmSettings(Settings):
    http_port: int = 8080  # HOTLINE_HTTP_PORT: REST API, websocket, desktop
    login_attempts_per_minute: int = 30  # HOTLINE_LOGIN_ATTEMPTS_PER_MINUTE, per address
    login_max_hashes: int = 2  # HOTLINE_LOGIN_MAX_HASHES: password hashes at once
    trusted_proxies: tuple[str, ...] = ()  # HOTLINE_TRUSTED_PROXIES: X-Forwarded-For from
    acw_s: int = 60  # HOTLINE_ACW_S: after-call work the desk counts down before Ready
    not_ready_reasons: tuple[str, ...] = tuple(DEFAULT_NOT_READY_REASONS.split(","))
    dial_classes: tuple[str, ...] = tuple(DEFAULT_TABLE.split(","))  # HOTLINE_DIAL_CLASSES
    dial_ring_timeout_s: int = 30  # HOTLINE_DIAL_RING_TIMEOUT_S: give up on the customer
    #: HOTLINE_CRM_FETCH_WAIT_MS: the CRM consumer's fetch wait at the broker. Longer than the
    #: services' HOTLINE_KAFKA_FETCH_WAIT_MS so each fetch brings more events to one CDR
    #: transaction; the desk's pushes (the screen pop) leave from the same consumer, so this
    #: is also how late a screen pop may be, at most (docs/configuration.md)
    crm_fetch_wait_ms: int = 100

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        attempts = env.integer("LOGIN_ATTEMPTS_PER_MINUTE", 30)
        if attempts < 1:
            raise env.error("LOGIN_ATTEMPTS_PER_MINUTE", str(attempts), "must be at least 1")
        hashes = env.integer("LOGIN_MAX_HASHES", 2)
        if not 1 <= hashes <= 64:
            raise env.error("LOGIN_MAX_HASHES", str(hashes), "must be 1 to 64")
        acw = env.integer("ACW_S", 60)
        if not 0 <= acw <= 600:
            raise env.error("ACW_S", str(acw), "must be 0 to 600 seconds")
        reasons = env.items("NOT_READY_REASONS", DEFAULT_NOT_READY_REASONS)
        if not reasons:
            raise env.error("NOT_READY_REASONS", "", "must list at least one reason")
        for reason in reasons:
            if not reason.replace("_", "").replace("-", "").isalnum() or len(reason) > 32:
                raise env.error(
                    "NOT_READY_REASONS", reason, "is not a reason code (letters, digits, _ -)"
                )
        dial_classes = env.items("DIAL_CLASSES", DEFAULT_TABLE)
        try:
            parse_table(dial_classes)
        except DialPlanError as exc:
            raise env.error("DIAL_CLASSES", ",".join(dial_classes), str(exc)) from None
        ring = env.integer("DIAL_RING_TIMEOUT_S", 30)
        if not 5 <= ring <= 120:
            raise env.error("DIAL_RING_TIMEOUT_S", str(ring), "must be 5 to 120 seconds")
        fetch_wait = env.integer("CRM_FETCH_WAIT_MS", 100)
        if not 1 <= fetch_wait <= 1000:
            raise env.error("CRM_FETCH_WAIT_MS", str(fetch_wait), "must be 1-1000 (milliseconds)")
        return super().read(env) | {
            "acw_s": acw,
            "crm_fetch_wait_ms": fetch_wait,
            "not_ready_reasons": reasons,
            "dial_classes": dial_classes,
            "dial_ring_timeout_s": ring,
            "http_port": env.port("HTTP_PORT", 8080),
            "login_attempts_per_minute": attempts,
            "login_max_hashes": hashes,
            "trusted_proxies": env.networks("TRUSTED_PROXIES", ""),
        }
