"""IVR flow files: the shipped default and validation errors that say where the problem is."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from ivr.flows import DEFAULT_FLOWS, FlowError, Route, load_flows, parse_flows


def good() -> dict:
    return {
        "flows": [
            {
                "dnis": "10000",
                "name": "human-service",
                "greeting": "welcome",
                "menu": {
                    "prompt": "menu",
                    "timeout_ms": 4000,
                    "attempts": 3,
                    "options": {"1": {"queue": "sales"}, "2": {"queue": "support", "priority": 2}},
                    "default": {"queue": "support"},
                },
            }
        ]
    }


def test_default_file_loads() -> None:
    flows = load_flows()
    assert DEFAULT_FLOWS.exists()
    assert set(flows) == {"10000", "10001"}
    human = flows["10000"]
    assert (human.dnis, human.name, human.greeting) == ("10000", "human-service", "welcome")
    assert human.menu.prompt == "menu"
    assert (human.menu.timeout_ms, human.menu.attempts) == (6000, 2)
    assert human.route_for("1") == Route("sales") and human.route_for("2") == Route("support")
    assert human.route_for("9") is None and human.route_for("") is None
    assert human.menu.default == Route("support")
    assert human.queues == ["sales", "support"]
    assert flows["10001"].name == "self-service"


def test_parse_a_good_document() -> None:
    (flow,) = parse_flows(good()).values()
    assert flow.menu.options == {"1": Route("sales", 0), "2": Route("support", 2)}
    assert (flow.menu.timeout_ms, flow.menu.attempts) == (4000, 3)


def test_defaults_and_number_coercion() -> None:
    doc = {
        "flows": [
            {
                "dnis": 10000,
                "name": "n",
                "menu": {"prompt": "p", "options": {1: {"queue": "q1"}, "#": {"queue": "q2"}}},
            }
        ]
    }
    flow = parse_flows(doc)["10000"]  # YAML reads an unquoted number as int
    assert flow.greeting is None
    assert flow.menu.default is None
    assert (flow.menu.timeout_ms, flow.menu.attempts) == (6000, 2)
    assert set(flow.menu.options) == {"1", "#"}
    assert flow.queues == ["q1", "q2"]


def broken(mutate) -> dict:  # noqa: ANN001
    doc = copy.deepcopy(good())
    mutate(doc["flows"][0])
    return doc


def _set(path: str, value: object):  # noqa: ANN202
    def mutate(flow: dict) -> None:
        *parents, last = path.split(".")
        target = flow
        for p in parents:
            target = target[p]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


DELETE = object()

CASES = [
    ("no dnis", _set("dnis", DELETE), "flows[0]: 'dnis' and 'name' are required"),
    ("no name", _set("name", DELETE), "flows[0]: 'dnis' and 'name' are required"),
    ("no menu", _set("menu", DELETE), "flows[0].menu: needs a 'prompt'"),
    ("no prompt", _set("menu.prompt", DELETE), "flows[0].menu: needs a 'prompt'"),
    ("no options", _set("menu.options", {}), "flows[0].menu.options: needs at least one digit"),
    ("options list", _set("menu.options", ["1"]), "flows[0].menu.options: needs at least one"),
    (
        "two digits",
        _set("menu.options", {"12": {"queue": "q"}}),
        "flows[0].menu.options: '12' is not a single DTMF digit",
    ),
    ("letter", _set("menu.options", {"A": {"queue": "q"}}), "'A' is not a single DTMF digit"),
    (
        "route no queue",
        _set("menu.options", {"1": {"priority": 1}}),
        "flows[0].menu.options[1]: needs a mapping with a non-empty 'queue'",
    ),
    (
        "route empty queue",
        _set("menu.options", {"1": {"queue": ""}}),
        "flows[0].menu.options[1]: needs a mapping with a non-empty 'queue'",
    ),
    ("route not mapping", _set("menu.options", {"1": "sales"}), "flows[0].menu.options[1]:"),
    (
        "priority",
        _set("menu.options", {"1": {"queue": "q", "priority": "high"}}),
        "flows[0].menu.options[1]: priority must be an integer",
    ),
    ("default", _set("menu.default", {"queue": 7}), "flows[0].menu.default: needs a mapping"),
    ("timeout", _set("menu.timeout_ms", 0), "flows[0].menu.timeout_ms must be a positive integer"),
    ("timeout str", _set("menu.timeout_ms", "6s"), "flows[0].menu.timeout_ms must be a positive"),
    ("attempts", _set("menu.attempts", -1), "flows[0].menu.attempts must be a positive integer"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_names_the_field(mutate, message: str) -> None:  # noqa: ANN001
    with pytest.raises(FlowError, match=re.escape(message)):
        parse_flows(broken(mutate))


def test_errors_point_at_the_right_flow() -> None:
    doc = good()
    second = copy.deepcopy(doc["flows"][0])
    second["dnis"] = "10001"
    second["menu"]["attempts"] = 0
    doc["flows"].append(second)
    with pytest.raises(FlowError, match=re.escape("flows[1].menu.attempts")):
        parse_flows(doc)


def test_duplicate_dnis() -> None:
    doc = good()
    twin = copy.deepcopy(doc["flows"][0])
    twin["name"] = "twin"
    doc["flows"].append(twin)
    with pytest.raises(
        FlowError, match=re.escape("flows[1]: dnis 10000 is already used by flow human-service")
    ):
        parse_flows(doc)


@pytest.mark.parametrize("doc", [None, [], {"flows": {}}, {"flow": []}, "flows"])
def test_top_level_shape(doc: object) -> None:
    with pytest.raises(FlowError, match="top level must be a mapping with a 'flows' list"):
        parse_flows(doc)


def test_flow_entry_not_a_mapping() -> None:
    with pytest.raises(FlowError, match=re.escape("flows[0]: must be a mapping")):
        parse_flows({"flows": ["10000"]})


def test_load_flows_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(
        'flows:\n  - dnis: "2000"\n    name: x\n    menu:\n      prompt: p\n'
        '      options:\n        "5": {queue: vip, priority: 9}\n',
        encoding="utf-8",
    )
    assert load_flows(path)["2000"].route_for("5") == Route("vip", 9)


def test_load_flows_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(FlowError, match=re.escape(f"cannot read flows from {missing}")):
        load_flows(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("flows: [\n  - {dnis: 1\n", encoding="utf-8")
    with pytest.raises(FlowError, match=re.escape(f"cannot read flows from {bad}")):
        load_flows(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(FlowError, match="top level"):
        load_flows(empty)
