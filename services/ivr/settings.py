"""The IVR's settings: where its call flows are.

With `common.settings` the only reader of `HOTLINE_*` for the IVR. docs/configuration.md lists
every variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import Env, Settings
from ivr.flows import DEFAULT_FLOWS


@dataclass(frozen=True)
class IvrSettings(Settings):
    flows_file: Path = DEFAULT_FLOWS  # HOTLINE_IVR_FLOWS: the YAML call flows

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        return super().read(env) | {"flows_file": env.path("IVR_FLOWS", DEFAULT_FLOWS)}
