"""The access policy: every route has an explicit entry, and the entries say what we mean."""

from __future__ import annotations

import pytest

from crm.app import web_app
from crm.roles import CALL_TAKERS, EVERYONE, POLICY, PUBLIC, Role, allowed


class _Unused:
    """Stands in for dependencies that building the route table never touches."""


def _routes() -> set[tuple[str, str]]:
    app = web_app(
        _Unused(),  # type: ignore[arg-type]
        _Unused(),  # type: ignore[arg-type]
        _Unused(),  # type: ignore[arg-type]
        _Unused(),  # type: ignore[arg-type]
        gateway=_Unused(),  # type: ignore[arg-type]
        recorder=_Unused(),  # type: ignore[arg-type]
    )
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_every_route_has_a_policy_and_every_policy_a_route() -> None:
    routes = _routes()
    assert routes == set(POLICY), "routes and crm.roles.POLICY disagree"


def test_only_the_login_and_the_static_desktop_are_public() -> None:
    public = {key for key, roles in POLICY.items() if roles == PUBLIC}
    assert public == {("POST", "/api/login"), ("GET", "/"), ("GET", "/static")}


@pytest.mark.parametrize("path", ["/api/agent/login", "/api/agent/state", "/api/agent/logout"])
def test_only_call_takers_drive_an_acd_seat(path: str) -> None:
    assert allowed("POST", path) == CALL_TAKERS == {Role.AGENT, Role.TEAM_LEADER}


def test_everyone_logged_in_may_read_customers_and_cdrs() -> None:
    for key in [
        ("GET", "/api/customers"),
        ("GET", "/api/cdrs"),
        ("GET", "/api/cdrs/{call_id}"),
        ("GET", "/ws"),
        ("GET", "/api/me"),
        ("POST", "/api/logout"),
    ]:
        assert POLICY[key] == EVERYONE


def test_unknown_routes_have_no_policy_and_head_follows_get() -> None:
    assert allowed("DELETE", "/api/cdrs") is None
    assert allowed("GET", "/api/admin") is None
    assert allowed("HEAD", "/api/me") == EVERYONE


def test_role_values_are_the_stored_strings() -> None:
    assert [r.value for r in Role] == ["agent", "team_leader", "supervisor", "qa", "admin"]
