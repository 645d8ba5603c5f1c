"""What the agent desk is configured with: after-call work, not-ready reasons, dial classes
per role, the hold reminders of the service standards. One object, built from the settings
at start and handed to the web app, so handlers and the browser read the same values."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from crm.dialplan import DEFAULT_TABLE, dial_class_of, parse_table
from crm.roles import Role

#: REQUIREMENTS service standards: a caller is held at most 30 s, with an update every 15 s.
HOLD_REMIND_S = 15
HOLD_WARN_S = 30


@dataclass(frozen=True)
class DeskConfig:
    acw_s: int = 60
    not_ready_reasons: tuple[str, ...] = (
        "meal",
        "meeting",
        "training",
        "restroom",
        "helping",
        "break",
        "other",
    )
    dial_table: dict[Role, str] = field(
        default_factory=lambda: parse_table(DEFAULT_TABLE.split(","))
    )
    ring_timeout_s: int = 30

    def dial_class(self, role: str) -> str:
        return dial_class_of(role, self.dial_table)

    def public(self, role: str) -> dict[str, object]:
        """What the desk of a user with `role` needs to know."""
        return {
            "acw_s": self.acw_s,
            "hold_remind_s": HOLD_REMIND_S,
            "hold_warn_s": HOLD_WARN_S,
            "not_ready_reasons": list(self.not_ready_reasons),
            "dial_class": self.dial_class(role),
            "ring_timeout_s": self.ring_timeout_s,
        }


DESK = web.AppKey("desk_config", DeskConfig)
