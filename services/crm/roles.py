"""Who may call what: the role of every user and the allowed roles of every route.

One explicit table instead of checks scattered through handlers, so a reviewer can read the
whole access policy in one place and a route without an entry is refused (fail closed).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """The roles of REQUIREMENTS.md (座席员, 班长, 主管, 质检员, 管理员)."""

    AGENT = "agent"
    TEAM_LEADER = "team_leader"
    SUPERVISOR = "supervisor"
    QA = "qa"
    ADMIN = "admin"


EVERYONE = frozenset(Role)
#: roles that take calls themselves and so may log in to the ACD and change their state.
CALL_TAKERS = frozenset({Role.AGENT, Role.TEAM_LEADER})
#: roles that see every agent's calls and live desk events, not only their own.
WATCHERS = frozenset({Role.TEAM_LEADER, Role.SUPERVISOR, Role.ADMIN})
#: roles that may read every CDR (QA listens to everyone's calls).
ALL_CDR_READERS = frozenset({Role.TEAM_LEADER, Role.SUPERVISOR, Role.QA, Role.ADMIN})

#: roles that act on calls from the desk: their own (call takers) or anyone's (supervisors).
CALL_ACTORS = CALL_TAKERS | frozenset({Role.SUPERVISOR})

#: roles that configure the site (hot desks, later users and queues).
ADMINS = frozenset({Role.ADMIN})

#: roles that act on other agents and their calls from the board: listen, whisper, barge,
#: force release, change an agent's state (强拆、强插 and 监听 are for authorized seats only).
SUPERVISORS = frozenset({Role.SUPERVISOR, Role.ADMIN})

#: sentinel for routes that need no session (the login itself, the static desktop).
PUBLIC: frozenset[Role] = frozenset()

#: (method, route pattern) -> roles allowed. Every route the web app serves has an entry.
POLICY: dict[tuple[str, str], frozenset[Role]] = {
    ("POST", "/api/login"): PUBLIC,
    ("POST", "/api/logout"): EVERYONE,
    ("GET", "/api/me"): EVERYONE,
    ("GET", "/api/agent"): CALL_TAKERS,
    ("POST", "/api/agent/login"): CALL_TAKERS,
    ("POST", "/api/agent/state"): CALL_TAKERS,
    ("POST", "/api/agent/logout"): CALL_TAKERS,
    ("GET", "/api/customers"): EVERYONE,
    ("GET", "/api/cdrs"): EVERYONE,
    ("GET", "/api/cdrs/{call_id}"): EVERYONE,
    ("GET", "/api/hotdesks"): EVERYONE,
    ("POST", "/api/hotdesks"): ADMINS,
    ("DELETE", "/api/hotdesks/{extension}"): ADMINS,
    ("POST", "/api/lock"): EVERYONE,
    ("POST", "/api/unlock"): EVERYONE,
    ("POST", "/api/me/language"): EVERYONE,
    # the agent desk's call control (crm.call_control); handlers also check the call is theirs
    ("POST", "/api/calls/{call_id}/hold"): CALL_ACTORS,
    ("POST", "/api/calls/{call_id}/resume"): CALL_ACTORS,
    ("POST", "/api/calls/{call_id}/transfer"): CALL_ACTORS,
    ("POST", "/api/calls/{call_id}/consult/{action}"): CALL_ACTORS,
    ("POST", "/api/calls/{call_id}/conference"): CALL_ACTORS,
    ("DELETE", "/api/calls/{call_id}/conference/{leg_id}"): CALL_ACTORS,
    ("POST", "/api/calls/{call_id}/mute"): CALL_ACTORS,
    ("POST", "/api/calls/{call_id}/digits"): CALL_ACTORS,
    ("POST", "/api/calls/{call_id}/hangup"): CALL_ACTORS,
    ("POST", "/api/dial"): CALL_ACTORS,
    ("GET", "/api/desk/directory"): CALL_ACTORS,
    # after-call work (crm.wrapup) and contact history (crm.history)
    ("GET", "/api/desk/config"): EVERYONE,
    ("POST", "/api/calls/{call_id}/disposition"): CALL_ACTORS,
    ("GET", "/api/callbacks"): EVERYONE,
    ("POST", "/api/callbacks/{callback_id}/done"): CALL_ACTORS | WATCHERS,
    ("GET", "/api/dispositions"): ADMINS,
    ("PUT", "/api/dispositions/{code}"): ADMINS,
    ("GET", "/api/customers/{customer_id}/history"): EVERYONE,
    # playback; the handler applies the recording rules (crm.history.may_play) and audits
    ("GET", "/api/cdrs/{call_id}/recordings/{recording_id}"): EVERYONE,
    ("GET", "/ws"): EVERYONE,
    ("GET", "/"): PUBLIC,
    ("GET", "/static"): PUBLIC,
    # the supervisor board (crm.supervision): watchers see it, supervisors act on it
    ("GET", "/api/supervision/board"): WATCHERS,
    ("POST", "/api/supervision/agents/{agent_id}/state"): SUPERVISORS,
    ("POST", "/api/supervision/agents/{agent_id}/logout"): SUPERVISORS,
    ("POST", "/api/supervision/calls/{call_id}/monitor"): SUPERVISORS,
    ("POST", "/api/supervision/calls/{call_id}/monitor/stop"): SUPERVISORS,
    ("POST", "/api/supervision/calls/{call_id}/release"): SUPERVISORS,
}


def allowed(method: str, pattern: str) -> frozenset[Role] | None:
    """Roles allowed on a route, PUBLIC for open routes, None when the route has no policy."""
    if method == "HEAD":
        method = "GET"
    return POLICY.get((method, pattern))
