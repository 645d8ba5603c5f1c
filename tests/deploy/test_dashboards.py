"""Grafana dashboards: generated from code, current, shipped as sidecar ConfigMaps, each with a
data-freshness panel and a formula in every KPI panel's description."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.deploy.chart import CHART, ROOT, by_kind, render_ci

DASHBOARDS = CHART / "dashboards"


def load() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_regenerating_gives_the_same_bytes() -> None:
    proc = subprocess.run(
        [sys.executable, "deploy/dashboards.py", "--check"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_three_dashboards_with_their_variables() -> None:
    boards = load()
    assert set(boards) == {"wallboard", "gateway", "platform"}
    for name, board in boards.items():
        assert board["uid"] == f"hotline-{name}"
        variables = {v["name"] for v in board["templating"]["list"]}
        assert {"datasource", "site"} <= variables
    assert "queue" in {v["name"] for v in boards["wallboard"]["templating"]["list"]}


def test_each_dashboard_shows_data_freshness_and_every_panel_its_formula() -> None:
    for name, board in load().items():
        titles = [p["title"] for p in panels(board)]
        assert titles[0] == "Data age", name
        for panel in panels(board):
            description = panel.get("description", "")
            assert len(description) > 30, (name, panel["title"])
            exprs = [t["expr"] for t in panel["targets"]]
            assert exprs, (name, panel["title"])
            # the formula names what the query reads: a metric or recording rule it uses
            used = {w for e in exprs for w in re.findall(r"hotline[:_][a-z_:]+", e)}
            if used:
                assert any(u.split("{")[0] in description for u in used), (name, panel["title"])
            for expr in exprs:
                assert 'site=~"$site"' in expr, (name, panel["title"], expr)
                if (
                    name == "wallboard"
                    and "queue" in expr
                    and "hotline_agents" not in expr
                    and "site_occupancy" not in expr
                    and "up{" not in expr
                ):
                    assert 'queue=~"$queue"' in expr, (name, panel["title"], expr)


def test_wallboard_has_the_contact_center_kpis() -> None:
    titles = {p["title"] for p in panels(load()["wallboard"])}
    assert {
        "Calls waiting",
        "Longest wait",
        "Service level today",
        "ASA today",
        "Abandon rate today",
        "Agents by state",
    } <= titles


def test_the_chart_ships_them_as_sidecar_configmaps() -> None:
    docs = render_ci("default-values.yaml")
    maps = {
        c["metadata"]["name"]: c
        for c in by_kind(docs, "ConfigMap")
        if "-dashboard-" in c["metadata"]["name"]
    }
    assert set(maps) == {
        "hotline-dashboard-wallboard",
        "hotline-dashboard-gateway",
        "hotline-dashboard-platform",
    }
    for name, cm in maps.items():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        stem = name.removeprefix("hotline-dashboard-")
        assert json.loads(cm["data"][f"{stem}.json"]) == load()[stem]
    assert not [
        c
        for c in by_kind(render_ci("podman-values.yaml"), "ConfigMap")
        if "-dashboard-" in c["metadata"]["name"]
    ]
