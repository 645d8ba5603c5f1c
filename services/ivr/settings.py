"""The IVR's settings: where its call flows are.

With `common.settings` the only reader of `HOTLINE_*` for the IVR. docs/configuration.md lists
every variable.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.settings import Env, Settings
from ivr.flows import DEFAULT_FLOWS


@dataclass(frozen=True)
class IvrSettings(Settings):
    flows_file: Path = DEFAULT_FLOWS  # HOTLINE_IVR_FLOWS: the YAML call flows
    #: HOTLINE_IVR_ACD_WAIT_S: how long a caller who chose a queue waits (on hold music) for
    #: an ACD that cannot be reached (restarting, a standby taking over) before being told
    acd_wait_s: float = 20.0
    #: HOTLINE_IVR_INSTANCE (default: the host name, a pod's name in Kubernetes): names this
    #: IVR to the gateway on each call it answers, so after a crash it takes up its own calls
    instance: str = field(default_factory=socket.gethostname)

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        return super().read(env) | {
            "flows_file": env.path("IVR_FLOWS", DEFAULT_FLOWS),
            "acd_wait_s": env.number("IVR_ACD_WAIT_S", 20.0, above=0),
            "instance": env.text("IVR_INSTANCE", socket.gethostname()).strip()
            or socket.gethostname(),
        }
