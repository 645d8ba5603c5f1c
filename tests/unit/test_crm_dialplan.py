"""Click-to-dial: the dial class of each role, the table's checks, numbers as dialled."""

from __future__ import annotations

import pytest

from common.settings import SettingsError
from crm.dialplan import DEFAULT_TABLE, DialPlanError, dial_class_of, dialable, parse_table
from crm.roles import Role
from crm.settings import CrmSettings


def test_the_shipped_table_widens_with_seniority() -> None:
    table = parse_table(DEFAULT_TABLE.split(","))
    assert [dial_class_of(r, table) for r in ("agent", "team_leader", "supervisor")] == [
        "local",
        "long_distance",
        "international",
    ]
    assert dial_class_of("qa", table) == "internal"
    assert dial_class_of("nobody", table) == "internal"  # an unknown role gets the narrowest


def test_a_site_may_let_agents_call_long_distance() -> None:
    settings = CrmSettings.from_env(
        {
            "HOTLINE_DIAL_CLASSES": "agent=long_distance, team_leader=international,"
            "supervisor=international,qa=internal,admin=internal"
        }
    )
    assert dial_class_of(Role.AGENT, parse_table(settings.dial_classes)) == "long_distance"


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["agent"], "is not role=class"),
        (["boss=local"], "unknown role 'boss'"),
        (["agent=galactic"], "unknown dial class 'galactic'"),
        (["agent=local", "agent=internal"], "listed twice"),
        (["agent=local"], "no dial class for role(s) team_leader, supervisor, qa, admin"),
    ],
)
def test_bad_tables_say_what_is_wrong(items: list[str], message: str) -> None:
    with pytest.raises(DialPlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_table(items)


def test_a_bad_table_in_the_environment_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="HOTLINE_DIAL_CLASSES=.*unknown role 'boss'"):
        CrmSettings.from_env({"HOTLINE_DIAL_CLASSES": "boss=local"})


@pytest.mark.parametrize(
    ("raw", "dialled"),
    [
        ("138-0013-8000", "13800138000"),
        ("+1 (415) 555.0100", "0014155550100"),
        ("021 5888 1234", "02158881234"),
        ("*72#", "*72#"),
    ],
)
def test_numbers_are_dialled_as_digits(raw: str, dialled: str) -> None:
    assert dialable(raw) == dialled


@pytest.mark.parametrize(
    ("raw", "message"),
    [("", "empty"), ("+", "no digits"), ("555-CALL", "'ACL'"), ("1" * 33, "longer than 32")],
)
def test_undialable_numbers_are_refused(raw: str, message: str) -> None:
    with pytest.raises(DialPlanError, match=message):
        dialable(raw)
