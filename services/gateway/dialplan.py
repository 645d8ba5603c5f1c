"""The dial plan for click-to-dial: which class a number belongs to (internal, local, long
distance, international, by configurable patterns) and whether a role that may dial up to a
class may dial it. Pure; the servicer refuses with PERMISSION_DENIED what is above the class
the request carries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["CLASSES", "DEFAULT_PATTERNS", "DialPlan", "DialPlanError"]

#: from the least to the most a role may be allowed
CLASSES = ("internal", "local", "long_distance", "international")

#: China-style defaults: 4-digit extensions; 7-8 digit local numbers and mobiles; a trunk
#: prefix 0 and an area code; 00 or + and a country code
DEFAULT_PATTERNS: dict[str, str] = {
    "internal": r"[0-9]{4}",
    "local": r"[2-9][0-9]{6,7}|1[3-9][0-9]{9}",
    "long_distance": r"0[1-9][0-9]{8,10}",
    "international": r"(?:00|\+)[1-9][0-9]{6,14}",
}


class DialPlanError(ValueError):
    """A bad pattern or class name in the settings; the message says which."""


@dataclass(frozen=True)
class DialPlan:
    """``patterns[class]`` is a regular expression the whole number must match."""

    patterns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))

    def __post_init__(self) -> None:
        for name, pattern in self.patterns.items():
            if name not in CLASSES:
                raise DialPlanError(f"unknown dial class {name!r} (have: {', '.join(CLASSES)})")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise DialPlanError(f"dial class {name}: bad pattern {pattern!r}: {exc}") from None

    def classify(self, number: str) -> str | None:
        """The first class (in :data:`CLASSES` order) whose pattern matches the number."""
        for name in CLASSES:
            pattern = self.patterns.get(name)
            if pattern is not None and re.fullmatch(pattern, number):
                return name
        return None

    @staticmethod
    def allows(allowed: str, wanted: str) -> bool:
        """May a role allowed up to ``allowed`` dial a ``wanted`` number?"""
        return CLASSES.index(wanted) <= CLASSES.index(allowed)
