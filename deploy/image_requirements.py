"""Prints the image's pinned requirements: the project's runtime dependencies (pyproject.toml)
with their pins from requirements.txt, and every dependency they pull
in pinned to the version installed in the project's virtualenv (the one the tests ran with)."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canon(req.name)] = line
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # markers evaluated for this interpreter: the image's Python is the same minor version as
    # the virtualenv's (Debian bookworm's 3.11; docs/deploy.md, "The image")
    wanted = [
        canon(req.name)
        for req in map(Requirement, project["dependencies"])
        if req.marker is None or req.marker.evaluate({"extra": ""})
    ]
    missing = [w for w in wanted if w not in pins]
    if missing:
        print(f"not pinned in requirements.txt: {', '.join(missing)}", file=sys.stderr)
        return 1
    lines, seen, todo = [], set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        lines.append(pins.get(name, f"{name}=={dist.version}"))
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(canon(req.name))
    print("\n".join(sorted(lines, key=str.lower)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
