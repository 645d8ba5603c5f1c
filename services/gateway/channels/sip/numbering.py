"""Number formats of a trunk: prefix rules applied to numbers coming in and going out.

A rule set is written ``prefix=>replacement`` items, comma-separated, tried in order; the
first rule whose prefix starts the number replaces that prefix, and a number no rule matches
is left as it is. An empty prefix matches every number. Examples for a Chinese carrier
that wants E.164: out ``00=>+,0=>+86`` (``013800138000`` -> ``+8613800138000``), in
``+86=>0,+=>00``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NumberRules", "NumberRulesError"]

_PART = re.compile(r"^\+?[0-9*#]*$")


class NumberRulesError(ValueError):
    """A rule set that does not parse; the text names the bad item."""


@dataclass(frozen=True)
class NumberRules:
    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> NumberRules:
        rules = []
        for item in (i.strip() for i in text.split(",")):
            if not item:
                continue
            prefix, arrow, replacement = item.partition("=>")
            prefix, replacement = prefix.strip(), replacement.strip()
            if not arrow:
                raise NumberRulesError(f"rule {item!r} is not prefix=>replacement")
            for part in (prefix, replacement):
                if not _PART.match(part):
                    raise NumberRulesError(
                        f"rule {item!r}: {part!r} is not digits (optionally a leading +)"
                    )
            rules.append((prefix, replacement))
        return cls(tuple(rules))

    def apply(self, number: str) -> str:
        for prefix, replacement in self.rules:
            if number.startswith(prefix):
                return replacement + number[len(prefix) :]
        return number

    def __str__(self) -> str:
        return ",".join(f"{p}=>{r}" for p, r in self.rules)
