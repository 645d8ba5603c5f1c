"""Who may dial how far: the dial class of each role for click-to-dial.

The gateway's dial plan decides which class a number falls in (internal, local, long distance,
international) and refuses a number above the class it is given; the CRM only decides which
class each user may use, from their role. The table is configuration
(`HOTLINE_DIAL_CLASSES`), so a site can let agents call long distance without a code change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crm.roles import Role

#: the classes from narrowest to widest; each includes the ones before it.
DIAL_CLASSES = ("internal", "local", "long_distance", "international")

#: the shipped table: agents call local numbers, team leaders long distance, supervisors
#: anywhere; QA and admins have no seat to dial from but may reach extensions.
DEFAULT_TABLE = (
    "agent=local,team_leader=long_distance,supervisor=international,qa=internal,admin=internal"
)

#: digits a customer's number may hold (a leading + for E.164 input).
_DIALABLE = frozenset("0123456789*#")
MAX_NUMBER_LEN = 32


class DialPlanError(ValueError):
    """A dial-class table or a number that cannot be used; the message says what is wrong."""


def parse_table(items: Iterable[str]) -> dict[Role, str]:
    """`["agent=local", ...]` -> {Role.AGENT: "local", ...}; every role must have a class."""
    table: dict[Role, str] = {}
    roles = {r.value: r for r in Role}
    for item in items:
        name, sep, dial_class = (part.strip() for part in item.partition("="))
        if not sep or not name or not dial_class:
            raise DialPlanError(f"{item!r} is not role=class")
        if name not in roles:
            raise DialPlanError(f"unknown role {name!r} (roles: {', '.join(roles)})")
        if dial_class not in DIAL_CLASSES:
            raise DialPlanError(
                f"unknown dial class {dial_class!r} for {name} (classes: {', '.join(DIAL_CLASSES)})"
            )
        if roles[name] in table:
            raise DialPlanError(f"role {name} is listed twice")
        table[roles[name]] = dial_class
    missing = [r.value for r in Role if r not in table]
    if missing:
        raise DialPlanError(f"no dial class for role(s) {', '.join(missing)}")
    return table


def dial_class_of(role: str, table: Mapping[Role, str]) -> str:
    """The widest class a user of `role` may dial; an unknown role gets the narrowest."""
    try:
        return table[Role(role)]
    except ValueError:
        return DIAL_CLASSES[0]


def dialable(number: str) -> str:
    """The number as the gateway gets it: spaces, dashes, dots and brackets dropped, a leading
    + kept as the international prefix "00"; DialPlanError naming the fault otherwise."""
    text = number.strip()
    if not text:
        raise DialPlanError("the number is empty")
    international = text.startswith("+")
    body = text[1:] if international else text
    digits = "".join(ch for ch in body if ch not in " -.()")
    bad = sorted({ch for ch in digits if ch not in _DIALABLE})
    if bad:
        raise DialPlanError(f"the number contains {''.join(bad)!r}; only digits, * and # dial")
    if not digits:
        raise DialPlanError("the number has no digits")
    digits = ("00" + digits) if international else digits
    if len(digits) > MAX_NUMBER_LEN:
        raise DialPlanError(f"the number is longer than {MAX_NUMBER_LEN} digits")
    return digits
