"""Call flows: which prompts a number plays and which queue each menu digit leads to.

Flows are YAML so a customer can author and change menus without touching the back end;
loading validates everything up front and names the flow and field that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_FLOWS = Path(__file__).parent / "flows" / "default.yaml"
DIGITS = set("0123456789*#")


class FlowError(ValueError):
    """A flow file is not valid; the message says where."""


@dataclass(frozen=True)
class Route:
    queue: str
    priority: int = 0


@dataclass(frozen=True)
class Menu:
    prompt: str
    options: dict[str, Route]
    default: Route | None
    timeout_ms: int = 6000
    attempts: int = 2


@dataclass(frozen=True)
class Flow:
    dnis: str
    name: str
    greeting: str | None
    menu: Menu
    queues: list[str] = field(default_factory=list)

    def route_for(self, digit: str) -> Route | None:
        return self.menu.options.get(digit)


def _route(where: str, raw: object) -> Route:
    if not isinstance(raw, dict) or not isinstance(raw.get("queue"), str) or not raw["queue"]:
        raise FlowError(f"{where}: needs a mapping with a non-empty 'queue'")
    priority = raw.get("priority", 0)
    if not isinstance(priority, int):
        raise FlowError(f"{where}: priority must be an integer")
    return Route(raw["queue"], priority)


def parse_flows(doc: object) -> dict[str, Flow]:
    """Validate a flows document; returns flows by DNIS."""
    if not isinstance(doc, dict) or not isinstance(doc.get("flows"), list):
        raise FlowError("top level must be a mapping with a 'flows' list")
    flows: dict[str, Flow] = {}
    for i, raw in enumerate(doc["flows"]):
        where = f"flows[{i}]"
        if not isinstance(raw, dict):
            raise FlowError(f"{where}: must be a mapping")
        dnis, name = str(raw.get("dnis", "")), raw.get("name")
        if not dnis or not isinstance(name, str):
            raise FlowError(f"{where}: 'dnis' and 'name' are required")
        if dnis in flows:
            raise FlowError(f"{where}: dnis {dnis} is already used by flow {flows[dnis].name}")
        menu_raw = raw.get("menu")
        if not isinstance(menu_raw, dict) or not isinstance(menu_raw.get("prompt"), str):
            raise FlowError(f"{where}.menu: needs a 'prompt'")
        options_raw = menu_raw.get("options") or {}
        if not isinstance(options_raw, dict) or not options_raw:
            raise FlowError(f"{where}.menu.options: needs at least one digit")
        options = {}
        for digit, route in options_raw.items():
            digit = str(digit)
            if digit not in DIGITS:
                raise FlowError(f"{where}.menu.options: {digit!r} is not a single DTMF digit")
            options[digit] = _route(f"{where}.menu.options[{digit}]", route)
        default = (
            _route(f"{where}.menu.default", menu_raw["default"])
            if menu_raw.get("default") is not None
            else None
        )
        timeout_ms, attempts = menu_raw.get("timeout_ms", 6000), menu_raw.get("attempts", 2)
        if not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise FlowError(f"{where}.menu.timeout_ms must be a positive integer")
        if not isinstance(attempts, int) or attempts <= 0:
            raise FlowError(f"{where}.menu.attempts must be a positive integer")
        greeting = raw.get("greeting")
        menu = Menu(menu_raw["prompt"], options, default, timeout_ms, attempts)
        queues = sorted(
            {r.queue for r in options.values()} | ({default.queue} if default else set())
        )
        flows[dnis] = Flow(dnis, name, greeting, menu, queues)
    return flows


def load_flows(path: Path = DEFAULT_FLOWS) -> dict[str, Flow]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FlowError(f"cannot read flows from {path}: {exc}") from exc
    return parse_flows(doc)
