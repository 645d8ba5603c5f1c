"""Caller numbers as the CRM compares them.

The same subscriber reaches us as "sip:+8613800138000@trunk", "008613800138000" or
"138-0013-8000" depending on the trunk; customers are stored and looked up by one normal
form (national digits only) so a screen pop finds them whatever the signalling looked like.
"""

from __future__ import annotations

import re

_SCHEMES = ("sips:", "sip:", "tel:")
_COUNTRY_PREFIXES = ("+86", "0086")
_NON_DIGITS = re.compile(r"\D")


def normalise(number: str) -> str:
    """National digits of a calling number; "" when nothing dialable is left (e.g. "sipp")."""
    text = number.strip().lower()
    for scheme in _SCHEMES:
        if text.startswith(scheme):
            text = text[len(scheme) :]
            break
    # A SIP URI's user part is the number; drop host and URI parameters.
    text = text.split("@", 1)[0].split(";", 1)[0]
    for prefix in _COUNTRY_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return _NON_DIGITS.sub("", text)
