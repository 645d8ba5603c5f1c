"""Which SIP extensions exist and their digest credentials (HA1, never the password).

The directory is the gateway's own data: a YAML file `{extension: ha1}` (named by the
gateway's settings, HOTLINE_GATEWAY_EXTENSIONS), or, by default, the demo extensions
8001–8016 (the 16 agent seats) and 8090 (a supervisor's desk phone, for listening in: an admin
approves it as a hot desk) whose passwords are `<ext>-demo` (documented in the README; change
them before any real use).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gateway.sip.digest import ha1

DEMO_EXTENSIONS = (*range(8001, 8017), 8090)
_HA1 = re.compile(r"^[0-9a-f]{32}$")


class DirectoryError(ValueError):
    """The extensions file is unreadable or has a bad entry; the message says which."""


def demo_password(extension: str) -> str:
    return f"{extension}-demo"


def demo_directory(realm: str) -> dict[str, str]:
    return {str(e): ha1(str(e), realm, demo_password(str(e))) for e in DEMO_EXTENSIONS}


def load_directory(realm: str, path: Path | str | None = None) -> dict[str, str]:
    """Extensions → HA1, from the YAML file at `path`, else (no path) the demo set."""
    if not path:
        return demo_directory(realm)
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DirectoryError(f"cannot read extensions from {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise DirectoryError(f"{path}: expected a mapping of extension to HA1")
    directory = {}
    for ext, value in doc.items():
        if not isinstance(value, str) or not _HA1.match(value):
            raise DirectoryError(
                f"{path}: extension {ext}: HA1 must be 32 lower-case hex digits "
                f"(md5 of ext:{realm}:password)"
            )
        directory[str(ext)] = value
    return directory
