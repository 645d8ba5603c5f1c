"""Rendering the Hotline chart with the Helm SDK embedded in helm-python-sdk (no helm binary)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hotline"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "hotline", "call-center"


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render_files(
    values: dict | None = None, *, release: str = RELEASE, upgrade: bool = False
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as `helm template` would."""
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.render(
            values=values or {},
            name=release,
            namespace=NAMESPACE,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )


def render(values: dict | None = None, **kw: object) -> list[dict]:
    """Every Kubernetes object the chart renders for these values."""
    docs: list[dict] = []
    for path, text in sorted(render_files(values, **kw).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@cache
def render_ci(name: str) -> tuple[dict, ...]:
    """The objects of one ci/ values set (cached: rendering takes a few hundred ms)."""
    return tuple(render(values_of(CHART / "ci" / name)))


def by_kind(docs: list[dict] | tuple[dict, ...], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict] | tuple[dict, ...], kind: str, name_suffix: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
    return found[0]
