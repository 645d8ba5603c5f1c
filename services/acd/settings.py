"""The ACD's settings: its queues and the timers of an offer and of wrap-up.

With `common.settings` the only reader of `HOTLINE_*` for the ACD. docs/configuration.md lists
every variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.settings import Env, Settings

DEFAULT_QUEUES = ("sales", "support")


@dataclass(frozen=True)
class AcdSettings(Settings):
    queues: tuple[str, ...] = DEFAULT_QUEUES  # HOTLINE_ACD_QUEUES, comma-separated
    ring_timeout_s: float = 15.0  # HOTLINE_RING_TIMEOUT_S: an offer rings this long
    wrap_up_s: float = 10.0  # HOTLINE_WRAP_UP_S: after-call work

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        queues = env.items("ACD_QUEUES", ",".join(DEFAULT_QUEUES))
        raw = env.text("ACD_QUEUES", "")
        if not queues:
            raise env.error("ACD_QUEUES", raw, "names no queue (e.g. sales,support)")
        if len(set(queues)) != len(queues):
            raise env.error("ACD_QUEUES", raw, "names a queue twice")
        return super().read(env) | {
            "queues": queues,
            "ring_timeout_s": env.number("RING_TIMEOUT_S", 15.0, above=0),
            "wrap_up_s": env.number("WRAP_UP_S", 10.0, minimum=0),
        }
