"""The CRM web app against real databases (SQLite and PostgreSQL) and a real gRPC ACD peer.

Every test runs once per backend. PostgreSQL gets a fresh, uniquely named database per run
(dropped afterwards); the tests skip on PostgreSQL only when no server answers at
HOTLINE_TEST_PG_DSN (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from aiohttp import WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client import REGISTRY
from sqlalchemy import select

from acd.servicer import AcdService
from common import rpc
from common.events import Envelope, envelope
from crm import auth as crm_auth
from crm.agent_control import AgentControl
from crm.api import CDRS
from crm.app import web_app
from crm.call_commands import CallCommands
from crm.cdr import CdrRecord, fold
from crm.cdr_store import CdrStore
from crm.db import Database
from crm.desk import HUB, DeskHub
from crm.intake import EventIntake
from crm.models import AuditEntry, Base, Session, User, utcnow
from crm.passwords import hash_password
from crm.recording_archive import RecordingArchive
from crm.roles import POLICY, PUBLIC, Role
from crm.seed import seed
from crm.servicer import CrmService
from crm.throttle import AddressLimiter, HashGate, LoginThrottle
from hotline.v1 import acd_pb2, acd_pb2_grpc, crm_pb2, crm_pb2_grpc
from hotline.v1 import events_pb2 as ev
from tests import tls as test_tls
from tests.crm_peers import (
    FakeCallControl,
    FakeRecorder,
    gateway_server,
    nowhere,
    recorder_server,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PG_DSN = os.environ.get("HOTLINE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

#: users for roles the demo seed has no account for.
EXTRA_USERS = [
    ("qa1", "qa1-test", Role.QA, None, None),
    ("lead1", "lead1-test", Role.TEAM_LEADER, "lead1", "8101"),
]
PASSWORDS = {
    "supervisor": "supervisor-demo",
    "admin": "admin-demo",
    **{f"agent{n}": f"agent{n}-demo" for n in range(1, 17)},
    **{u: p for u, p, *_ in EXTRA_USERS},
}
USER_OF_ROLE = {
    Role.AGENT: "agent1",
    Role.TEAM_LEADER: "lead1",
    Role.SUPERVISOR: "supervisor",
    Role.QA: "qa1",
    Role.ADMIN: "admin",
}


# -- fixtures -------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    dropper = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('crm')}/crm.sqlite"
    else:
        try:
            admin = await asyncpg.connect(PG_DSN, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            pytest.skip(f"PostgreSQL unreachable at {PG_DSN}: {exc!r}")
        name = f"hotline_crm_test_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = "postgresql+asyncpg://" + PG_DSN.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name

        async def dropper() -> None:
            admin = await asyncpg.connect(PG_DSN, timeout=3)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    database = Database(url)
    try:
        async with database.exclusive():
            await database.migrate()
            await seed(database)
        async with database.sessions() as session:
            for username, password, role, agent_id, extension in EXTRA_USERS:
                session.add(
                    User(
                        username=username,
                        password_hash=hash_password(password),
                        role=role.value,
                        display_name=username,
                        agent_id=agent_id,
                        extension=extension,
                    )
                )
            await session.commit()
        yield database
    finally:
        await database.dispose()
        if dropper is not None:
            await dropper()


class FakeAcd(acd_pb2_grpc.AcdServicer):
    """A small but honest ACD seat model: log in, ready / not ready, log out."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.agents: dict[str, acd_pb2.Agent] = {}
        self.requests: list[tuple[str, Any]] = []
        self.refuse: tuple[grpc.StatusCode, str] | None = None

    async def _gate(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.requests.append((name, request))
        if self.refuse is not None:
            await context.abort(*self.refuse)

    async def _known(self, agent_id: str, context: grpc.aio.ServicerContext) -> acd_pb2.Agent:
        if agent_id not in self.agents:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"agent {agent_id!r} is not logged in")
        return self.agents[agent_id]

    async def Login(
        self, request: acd_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        await self._gate("Login", request, context)
        if not request.agent_id or not request.extension:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "agent_id and extension are required"
            )
        agent = acd_pb2.Agent(
            agent_id=request.agent_id,
            extension=request.extension,
            state=ev.AGENT_STATE_NOT_READY,
            reason="login",
            queues=["support"],
        )
        self.agents[request.agent_id] = agent
        return agent

    async def SetState(
        self, request: acd_pb2.SetStateRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        await self._gate("SetState", request, context)
        agent = await self._known(request.agent_id, context)
        if request.state not in (ev.AGENT_STATE_READY, ev.AGENT_STATE_NOT_READY):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only ready or not_ready")
        agent.state, agent.reason = request.state, request.reason
        return agent

    async def Logout(
        self, request: acd_pb2.AgentRef, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        await self._gate("Logout", request, context)
        agent = await self._known(request.agent_id, context)
        agent.state, agent.reason = ev.AGENT_STATE_LOGGED_OUT, "logout"
        return agent

    async def GetAgent(
        self, request: acd_pb2.AgentRef, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        await self._gate("GetAgent", request, context)
        return await self._known(request.agent_id, context)

    async def ListAgents(
        self, request: acd_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.ListAgentsReply:
        await self._gate("ListAgents", request, context)
        return acd_pb2.ListAgentsReply(agents=list(self.agents.values()))

    async def ListQueues(
        self, request: acd_pb2.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.ListQueuesReply:
        await self._gate("ListQueues", request, context)
        return acd_pb2.ListQueuesReply(
            queues=[acd_pb2.QueueStatus(queue="support"), acd_pb2.QueueStatus(queue="vip")]
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def acd() -> AsyncIterator[tuple[FakeAcd, str]]:
    fake = FakeAcd()
    server, port = test_tls.server(
        "acd", acd_pb2_grpc.add_AcdServicer_to_server, fake, AcdService.CALLERS
    )
    await server.start()
    yield fake, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway() -> AsyncIterator[tuple[FakeCallControl, int]]:
    fake = FakeCallControl()
    server, port = gateway_server(fake)
    await server.start()
    yield fake, port
    await server.stop(None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorder() -> AsyncIterator[tuple[FakeRecorder, int]]:
    fake = FakeRecorder()
    server, port = recorder_server(fake)
    await server.start()
    yield fake, port
    await server.stop(None)


@pytest_asyncio.fixture(loop_scope="module")
async def client(
    db: Database,
    acd: tuple[FakeAcd, str],
    gateway: tuple[FakeCallControl, int],
    recorder: tuple[FakeRecorder, int],
) -> AsyncIterator[TestClient]:
    fake, target = acd
    fake.reset()
    gateway[0].reset()
    channel = rpc.channel(target, test_tls.tls("crm"), "acd")
    to_gateway = test_tls.channel("crm", "gateway", gateway[1])
    to_recorder = test_tls.channel("crm", "recorder", recorder[1])
    cdrs = CdrStore(db)
    app = web_app(
        db,
        AgentControl(channel),
        cdrs,
        DeskHub(db, cdrs),
        gateway=CallCommands(to_gateway),
        recorder=RecordingArchive(to_recorder),
    )
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    await channel.close()
    await to_gateway.close()
    await to_recorder.close()


@pytest.fixture(scope="module")
def tokens(db: Database) -> dict[str, str]:
    """Sessions are rows in this backend's database: one login per user serves its tests."""
    return {}


# -- helpers --------------------------------------------------------------------------------


async def log_in(client: TestClient, username: str, password: str | None = None) -> str:
    response = await client.post(
        "/api/login", json={"username": username, "password": password or PASSWORDS[username]}
    )
    assert response.status == 200, await response.text()
    client.session.cookie_jar.clear()  # tests choose their credentials explicitly
    return (await response.json())["token"]


async def token_of(client: TestClient, tokens: dict[str, str], username: str) -> str:
    if username not in tokens:
        tokens[username] = await log_in(client, username)
    return tokens[username]


async def as_user(client: TestClient, tokens: dict[str, str], username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await token_of(client, tokens, username)}"}


async def error_of(response: Any, status: int) -> str:
    assert response.status == status, (response.status, await response.text())
    body = await response.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


async def audit_entries(db: Database, actor: str, action: str) -> list[AuditEntry]:
    async with db.sessions() as session:
        return list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.actor == actor, AuditEntry.action == action)
            )
        )


def event(payload: Any, key: str, seconds_ago: float = 0.0) -> Envelope:
    env = envelope(payload, key, "test", "test")
    if seconds_ago:
        env.occurred_at.FromNanoseconds(int((time.time() - seconds_ago) * 1e9))
    return env


def concrete(pattern: str) -> str:
    for name, value in (
        ("{call_id}", "no-such-call"),
        ("{extension}", "8999"),
        ("{action}", "cancel"),
        ("{leg_id}", "leg-0"),
        ("{customer_id}", "1"),
        ("{recording_id}", "rec-0"),
        ("{callback_id}", "1"),
        ("{code}", "other"),
        ("{agent_id}", "no-such-agent"),
    ):
        pattern = pattern.replace(name, value)
    return pattern


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


# -- schema ---------------------------------------------------------------------------------


async def test_migrations_create_exactly_the_models(db: Database) -> None:
    def diff(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await db.migrate()  # a second start is a no-op


# -- login ----------------------------------------------------------------------------------


async def test_login_returns_token_user_and_http_only_cookie(
    client: TestClient, db: Database
) -> None:
    before = metric("hotline_crm_logins_total", {"result": "ok"})
    response = await client.post(
        "/api/login", json={"username": "agent1", "password": "agent1-demo"}
    )
    assert response.status == 200
    body = await response.json()
    token = body["token"]
    assert len(token) >= 32
    assert body["user"] == {
        "username": "agent1",
        "display_name": "李娜 Li Na",
        "role": "agent",
        "agent_id": "agent1",
        "extension": "8001",
        "language": "",
    }
    cookie = response.cookies["hotline_session"]
    assert cookie.value == token and cookie["httponly"] and cookie["samesite"] == "Strict"
    assert metric("hotline_crm_logins_total", {"result": "ok"}) == before + 1

    async with db.sessions() as session:
        stored = await session.get(Session, hashlib.sha256(token.encode()).hexdigest())
        assert stored is not None and stored.username == "agent1"
        assert timedelta(hours=11, minutes=59) < stored.expires - utcnow() <= timedelta(hours=12)
        assert await session.get(Session, token) is None  # never the token itself

    me = await client.get("/api/me")  # the cookie alone authenticates the browser
    assert (await me.json())["username"] == "agent1"
    client.session.cookie_jar.clear()
    me = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert (await me.json())["role"] == "agent"
    assert await audit_entries(db, "agent1", "login")


async def test_wrong_password_is_401_and_audited(client: TestClient, db: Database) -> None:
    before = metric("hotline_crm_logins_total", {"result": "rejected"})
    response = await client.post("/api/login", json={"username": "agent2", "password": "nope"})
    assert await error_of(response, 401) == "wrong username or password"
    response = await client.post("/api/login", json={"username": "ghost", "password": "x"})
    assert await error_of(response, 401) == "wrong username or password"
    assert "hotline_session" not in response.cookies
    assert metric("hotline_crm_logins_total", {"result": "rejected"}) == before + 2
    assert await audit_entries(db, "agent2", "login.failed")
    assert await audit_entries(db, "ghost", "login.failed")


async def test_sixth_failed_login_in_a_minute_is_429_even_with_the_right_password(
    client: TestClient, db: Database
) -> None:
    for _ in range(5):
        response = await client.post("/api/login", json={"username": "agent3", "password": "x"})
        assert response.status == 401
    for password in ("x", "agent3-demo"):
        response = await client.post(
            "/api/login", json={"username": "agent3", "password": password}
        )
        assert "too many failed logins" in await error_of(response, 429)
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert await audit_entries(db, "agent3", "login.throttled")
    other = await client.post("/api/login", json={"username": "agent4", "password": "agent4-demo"})
    assert other.status == 200  # another account from the same desk is not locked out


# -- access control -------------------------------------------------------------------------

PROTECTED = sorted(key for key, roles in POLICY.items() if roles != PUBLIC)


async def test_every_protected_endpoint_is_401_without_a_valid_session(
    client: TestClient, db: Database
) -> None:
    expired = "expired-" + uuid.uuid4().hex
    async with db.sessions() as session:
        session.add(
            Session(
                token_hash=hashlib.sha256(expired.encode()).hexdigest(),
                username="agent1",
                expires=utcnow() - timedelta(seconds=1),
            )
        )
        await session.commit()
    for method, pattern in PROTECTED:
        for headers in (
            {},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": f"Bearer {expired}"},
        ):
            response = await client.request(method, concrete(pattern), headers=headers)
            assert "authentication required" in await error_of(response, 401), (method, pattern)


async def test_every_endpoint_is_403_for_roles_not_on_its_list(
    client: TestClient, tokens: dict[str, str]
) -> None:
    refused = 0
    for method, pattern in PROTECTED:
        for role, username in USER_OF_ROLE.items():
            if role in POLICY[(method, pattern)]:
                continue
            response = await client.request(
                method, concrete(pattern), headers=await as_user(client, tokens, username)
            )
            assert f"role {role.value} may not" in await error_of(response, 403)
            refused += 1
    # supervisor, qa and admin on GET /api/agent and the three POSTs; every role but admin
    # on approving and withdrawing hot desks; qa and admin on the 12 call-control routes; qa
    # on closing a callback; every role but admin on listing and editing wrap-up codes; agent
    # and qa on the supervisor board; agent, team leader and qa on the five supervisor actions
    assert refused == 12 + 2 * 4 + 2 * 12 + 1 + 2 * 4 + 2 + 5 * 3


@pytest.mark.parametrize("username", ["agent1", "lead1", "supervisor", "qa1", "admin"])
async def test_every_role_reads_me_customers_and_cdrs(
    client: TestClient, tokens: dict[str, str], username: str
) -> None:
    headers = await as_user(client, tokens, username)
    for path in ("/api/me", "/api/customers?phone=13800138000", "/api/cdrs"):
        response = await client.get(path, headers=headers)
        assert response.status == 200, (path, await response.text())


async def test_unknown_paths_and_methods_are_json_errors(client: TestClient) -> None:
    assert "no such endpoint" in await error_of(await client.get("/api/nothing"), 404)
    response = await client.delete("/api/me")
    assert "not allowed" in await error_of(response, 405)


# -- request validation ---------------------------------------------------------------------

BAD_REQUESTS = [
    ("POST", "/api/login", None, b"", "request body must be a JSON object"),
    ("POST", "/api/login", None, b"{not json", "not valid JSON"),
    ("POST", "/api/login", None, b"[1, 2]", "request body must be a JSON object"),
    ("POST", "/api/login", None, b'{"password": "x"}', "missing field: username"),
    ("POST", "/api/login", None, b'{"username": "agent1"}', "missing field: password"),
    (
        "POST",
        "/api/login",
        None,
        b'{"username": 7, "password": "x"}',
        "field username must be a string",
    ),
    (
        "POST",
        "/api/login",
        None,
        b'{"username": "", "password": "x"}',
        "field username must not be empty",
    ),
    ("POST", "/api/agent/state", "agent1", b"", "request body must be a JSON object"),
    ("POST", "/api/agent/state", "agent1", b"{}", "missing field: state"),
    (
        "POST",
        "/api/agent/state",
        "agent1",
        b'{"state": "asleep"}',
        "field state must be one of: ready, not_ready",
    ),
    (
        "POST",
        "/api/agent/state",
        "agent1",
        b'{"state": "not_ready", "reason": "nap"}',
        "field reason must be one of",
    ),
    (
        "POST",
        "/api/agent/state",
        "agent1",
        b'{"state": "ready", "reason": "meal"}',
        "field reason is only allowed with state not_ready",
    ),
    (
        "POST",
        "/api/agent/login",
        "agent1",
        b'{"extension": 8001}',
        "field extension must be a string",
    ),
    (
        "POST",
        "/api/agent/login",
        "agent1",
        b'{"extension": "80a1"}',
        "field extension must contain digits only",
    ),
    ("POST", "/api/agent/login", "agent1", b"nonsense", "not valid JSON"),
    ("GET", "/api/customers", "agent1", None, "missing query parameter: phone"),
    ("GET", "/api/cdrs?limit=lots", "agent1", None, "query parameter limit must be"),
    ("GET", "/api/cdrs?limit=0", "supervisor", None, "query parameter limit must be"),
    ("GET", "/api/cdrs?limit=501", "supervisor", None, "query parameter limit must be"),
]


async def test_bad_requests_are_400_naming_what_is_wrong(
    client: TestClient, tokens: dict[str, str], acd: tuple[FakeAcd, str]
) -> None:
    for method, path, username, body, message in BAD_REQUESTS:
        headers = await as_user(client, tokens, username) if username else {}
        headers["Content-Type"] = "application/json"
        response = await client.request(method, path, data=body, headers=headers)
        assert message in await error_of(response, 400), (method, path, body)
    assert acd[0].requests == []  # nothing invalid was forwarded to the ACD


# -- customers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone", ["13800138000", "+8613800138000", "0086 138 0013 8000", "sip:+8613800138000@trunk1"]
)
async def test_customer_lookup_by_any_notation(
    client: TestClient, tokens: dict[str, str], phone: str
) -> None:
    response = await client.get(
        "/api/customers", params={"phone": phone}, headers=await as_user(client, tokens, "agent1")
    )
    assert response.status == 200
    customer = await response.json()
    assert (customer["name"], customer["phone"], customer["vip_tier"]) == ("张伟", "13800138000", 2)


async def test_unknown_customer_is_404(client: TestClient, tokens: dict[str, str]) -> None:
    headers = await as_user(client, tokens, "agent1")
    for phone in ("19999999999", "sipp"):
        response = await client.get("/api/customers", params={"phone": phone}, headers=headers)
        assert "no customer with phone" in await error_of(response, 404)


async def test_grpc_lookup_customer(db: Database) -> None:
    server, port = test_tls.server("crm", crm_pb2_grpc.add_CrmServicer_to_server, CrmService(db))
    await server.start()
    try:
        async with test_tls.channel("ivr", "crm", port) as channel:
            stub = crm_pb2_grpc.CrmStub(channel)
            found = await stub.LookupCustomer(
                crm_pb2.LookupCustomerRequest(phone="sip:5551234@127.0.0.1:5062")
            )
            assert (found.found, found.name, found.phone) == (True, "Demo Caller", "5551234")
            assert int(found.customer_id) > 0
            missing = await stub.LookupCustomer(crm_pb2.LookupCustomerRequest(phone="sipp"))
            assert missing.found is False and missing.name == ""
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.LookupCustomer(crm_pb2.LookupCustomerRequest())
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(None)


# -- CDRs -----------------------------------------------------------------------------------


def call_events(
    call_id: str, agent_id: str, extension: str, ani: str = "5551234"
) -> list[Envelope]:
    return [
        event(
            ev.CallOffered(call_id=call_id, ani=ani, dnis="10000", trunk="sipp", channel="sip"),
            call_id,
            40,
        ),
        event(ev.CallQueued(call_id=call_id, queue="support", ani=ani), call_id, 38),
        event(
            ev.AgentOffered(
                call_id=call_id, agent_id=agent_id, extension=extension, queue="support", ani=ani
            ),
            agent_id,
            37,
        ),
        event(ev.CallBridged(call_id=call_id, agent_id=agent_id, queue="support"), call_id, 35),
        event(
            ev.CallEnded(call_id=call_id, reason=ev.END_REASON_AGENT_HANGUP, talk_ms=30_000),
            call_id,
            5,
        ),
        event(
            ev.RecordingReady(
                call_id=call_id, recording_id=f"rec-{call_id}", path=f"rec/{call_id}.wav"
            ),
            call_id,
            4,
        ),
    ]


async def test_cdr_store_folds_shuffled_redelivered_events_into_one_row(db: Database) -> None:
    call_id = f"cdr-{uuid.uuid4().hex[:8]}"
    events = call_events(call_id, "agent9", "8009")
    expected = CdrRecord(call_id)
    for e in events:
        fold(expected, e)
    shuffled = events + events[:3]
    random.Random(7).shuffle(shuffled)
    store = CdrStore(db)
    before = metric("hotline_crm_cdrs_written_total")
    writes = [await store.apply(e) for e in shuffled]
    assert 1 <= sum(writes) <= len(events)  # redeliveries never write
    assert metric("hotline_crm_cdrs_written_total") == before + sum(writes)
    assert [await store.apply(e) for e in events] == [False] * len(events)  # all known
    row = await store.get(call_id)
    assert row is not None
    assert CdrRecord.from_row(row) == expected
    assert (row.agent_id, row.extension, row.end_reason, row.wait_ms, row.talk_ms) == (
        "agent9",
        "8009",
        "agent_hangup",
        3000,
        30000,
    )


async def test_cdr_listing_respects_roles(
    client: TestClient, tokens: dict[str, str], db: Database
) -> None:
    store = CdrStore(db)
    mine, theirs = f"mine-{uuid.uuid4().hex[:8]}", f"theirs-{uuid.uuid4().hex[:8]}"
    for e in call_events(mine, "agent3", "8003") + call_events(theirs, "agent4", "8004"):
        await store.apply(e)

    agent3 = await as_user(client, tokens, "agent3")
    rows = (await (await client.get("/api/cdrs", headers=agent3)).json())["cdrs"]
    assert mine in {r["call_id"] for r in rows}
    assert {r["agent_id"] for r in rows} == {"agent3"}
    own = await client.get(f"/api/cdrs/{mine}", headers=agent3)
    doc = await own.json()
    assert (doc["ani"], doc["queue"], doc["extension"], doc["recording_id"]) == (
        "5551234",
        "support",
        "8003",
        f"rec-{mine}",
    )
    assert doc["started_at"].endswith("Z") and "facts" not in doc
    assert "no call" in await error_of(await client.get(f"/api/cdrs/{theirs}", headers=agent3), 404)
    response = await client.get("/api/cdrs?agent=agent4", headers=agent3)
    assert "only list its own calls" in await error_of(response, 403)

    for username in ("supervisor", "qa1", "admin", "lead1"):
        headers = await as_user(client, tokens, username)
        everyone = (await (await client.get("/api/cdrs?limit=500", headers=headers)).json())["cdrs"]
        assert {mine, theirs} <= {r["call_id"] for r in everyone}, username
        assert (await client.get(f"/api/cdrs/{theirs}", headers=headers)).status == 200
    supervisor = await as_user(client, tokens, "supervisor")
    only4 = (await (await client.get("/api/cdrs?agent=agent4", headers=supervisor)).json())["cdrs"]
    assert theirs in {r["call_id"] for r in only4} and {r["agent_id"] for r in only4} == {"agent4"}
    one = (await (await client.get("/api/cdrs?limit=1", headers=supervisor)).json())["cdrs"]
    assert len(one) == 1


# -- the live feed --------------------------------------------------------------------------


async def test_websocket_needs_a_session(client: TestClient) -> None:
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 401
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/ws?token=forged")
    assert refused.value.status == 401


async def test_screen_pop_and_call_progress_reach_the_right_desks(
    client: TestClient, tokens: dict[str, str], db: Database
) -> None:
    app = client.server.app
    intake = EventIntake(app[HUB], app[CDRS])
    clients_before = metric("hotline_crm_ws_clients")
    agent1 = await client.ws_connect(f"/ws?token={await token_of(client, tokens, 'agent1')}")
    agent2 = await client.ws_connect("/ws", headers=await as_user(client, tokens, "agent2"))
    boss = await client.ws_connect("/ws", headers=await as_user(client, tokens, "supervisor"))
    for ws, name in ((agent1, "agent1"), (agent2, "agent2"), (boss, "supervisor")):
        hello = await ws.receive_json(timeout=2)
        assert (
            hello == {"type": "hello", "user": hello["user"]} and hello["user"]["username"] == name
        )
    assert metric("hotline_crm_ws_clients") == clients_before + 3

    call_id = f"pop-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    await intake.handle(
        event(
            ev.AgentOffered(
                call_id=call_id,
                agent_id="agent1",
                extension="8001",
                queue="support",
                ani="sip:5551234@127.0.0.1:5062",
                dnis="10000",
                attempt=1,
            ),
            "agent1",
        )
    )
    offer = await agent1.receive_json(timeout=1)
    assert time.monotonic() - started < 1.0
    assert {k: offer[k] for k in ("type", "call_id", "ani", "dnis", "queue")} == {
        "type": "offer",
        "call_id": call_id,
        "ani": "sip:5551234@127.0.0.1:5062",
        "dnis": "10000",
        "queue": "support",
    }
    assert offer["customer"]["name"] == "Demo Caller"
    assert offer["customer"]["phone"] == "5551234" and offer["customer"]["vip_tier"] == 1
    assert (await boss.receive_json(timeout=1))["call_id"] == call_id
    with pytest.raises(TimeoutError):
        await agent2.receive(timeout=0.3)  # another agent's desk stays quiet

    await intake.handle(
        event(
            ev.AgentStateChanged(
                agent_id="agent1",
                state=ev.AGENT_STATE_RINGING,
                previous=ev.AGENT_STATE_READY,
                extension="8001",
                call_id=call_id,
            ),
            "agent1",
        )
    )
    state = await agent1.receive_json(timeout=1)
    assert (state["type"], state["state"], state["previous"]) == ("state", "ringing", "ready")
    await intake.handle(
        event(ev.CallBridged(call_id=call_id, agent_id="agent1", queue="support"), call_id)
    )
    assert await agent1.receive_json(timeout=1) == {
        "type": "connected",
        "agent_id": "agent1",
        "call_id": call_id,
        "queue": "support",
    }
    await intake.handle(
        event(ev.CallEnded(call_id=call_id, reason=ev.END_REASON_CALLER_HANGUP), call_id)
    )
    ended = await agent1.receive_json(timeout=1)
    assert (ended["type"], ended["call_id"], ended["reason"]) == ("ended", call_id, "caller_hangup")
    assert [(await boss.receive_json(timeout=1))["type"] for _ in range(3)] == [
        "state",
        "connected",
        "ended",
    ]
    with pytest.raises(TimeoutError):
        await agent2.receive(timeout=0.2)

    cdr = await client.get(f"/api/cdrs/{call_id}", headers=await as_user(client, tokens, "agent1"))
    doc = await cdr.json()
    assert (doc["agent_id"], doc["extension"], doc["end_reason"]) == (
        "agent1",
        "8001",
        "caller_hangup",
    )
    for ws in (agent1, agent2, boss):
        await ws.close()


async def test_unknown_caller_pops_without_a_card_and_stale_offers_do_not_pop(
    client: TestClient, tokens: dict[str, str]
) -> None:
    app = client.server.app
    intake = EventIntake(app[HUB], app[CDRS])
    ws = await client.ws_connect("/ws", headers=await as_user(client, tokens, "agent6"))
    await ws.receive_json(timeout=2)
    stale = f"stale-{uuid.uuid4().hex[:6]}"
    await intake.handle(
        event(
            ev.AgentOffered(call_id=stale, agent_id="agent6", ani="5551234"),
            "agent6",
            seconds_ago=600,
        )
    )
    fresh = f"anon-{uuid.uuid4().hex[:6]}"
    await intake.handle(
        event(
            ev.AgentOffered(call_id=fresh, agent_id="agent6", ani="sipp", queue="sales"), "agent6"
        )
    )
    offer = await ws.receive_json(timeout=1)
    assert (offer["call_id"], offer["customer"]) == (fresh, None)
    await ws.close()


async def test_logout_ends_the_session_and_closes_its_feed(client: TestClient) -> None:
    token = await log_in(client, "agent5")
    headers = {"Authorization": f"Bearer {token}"}
    ws = await client.ws_connect("/ws", headers=headers)
    await ws.receive_json(timeout=2)
    response = await client.post("/api/logout", headers=headers)
    assert response.status == 200
    assert response.cookies["hotline_session"].value == ""
    closing = await ws.receive(timeout=2)
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == 4001
    assert (await client.get("/api/me", headers=headers)).status == 401


# -- the seat in the ACD --------------------------------------------------------------------


async def test_seat_commands_reach_the_acd_and_are_audited(
    client: TestClient, tokens: dict[str, str], acd: tuple[FakeAcd, str], db: Database
) -> None:
    fake, _ = acd
    headers = await as_user(client, tokens, "agent7")
    assert (await client.get("/api/agent", headers=headers)).status == 404  # never logged in

    response = await client.post("/api/agent/login", headers=headers)  # no body: defaults
    assert response.status == 200, await response.text()
    agent = await response.json()
    assert (agent["agent_id"], agent["extension"], agent["state"]) == (
        "agent7",
        "8007",
        "not_ready",
    )
    name, request = fake.requests[-1]
    assert name == "Login" and (request.agent_id, request.extension, list(request.queues)) == (
        "agent7",
        "8007",
        [],
    )

    admin = await as_user(client, tokens, "admin")
    response = await client.post("/api/hotdesks", json={"extension": "8107"}, headers=admin)
    assert response.status == 201, await response.text()
    response = await client.post("/api/agent/login", json={"extension": "8107"}, headers=headers)
    assert (await response.json())["extension"] == "8107"  # an approved hot desk

    response = await client.post("/api/agent/state", json={"state": "ready"}, headers=headers)
    assert (await response.json())["state"] == "ready"
    response = await client.post(
        "/api/agent/state", json={"state": "not_ready", "reason": "meal"}, headers=headers
    )
    assert (await response.json())["reason"] == "meal"
    name, request = fake.requests[-1]
    assert (name, request.state, request.reason) == ("SetState", ev.AGENT_STATE_NOT_READY, "meal")
    assert (await (await client.get("/api/agent", headers=headers)).json())["state"] == "not_ready"

    response = await client.post("/api/agent/logout", headers=headers)
    assert (await response.json())["state"] == "logged_out"

    assert len(await audit_entries(db, "agent7", "agent.login")) >= 2
    details = {e.detail for e in await audit_entries(db, "agent7", "agent.state")}
    assert {"ready", "not_ready (meal)"} <= details
    assert await audit_entries(db, "agent7", "agent.logout")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, 409),
        (grpc.StatusCode.INVALID_ARGUMENT, 409),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.INTERNAL, 502),
    ],
)
async def test_acd_refusals_map_to_http(
    client: TestClient,
    tokens: dict[str, str],
    acd: tuple[FakeAcd, str],
    db: Database,
    code: grpc.StatusCode,
    status: int,
) -> None:
    fake, _ = acd
    fake.refuse = (code, "agent agent8 is on_call; cannot log in again during a call")
    response = await client.post(
        "/api/agent/login", json={}, headers=await as_user(client, tokens, "agent8")
    )
    message = await error_of(response, status)
    assert "agent agent8 is on_call" in message
    refusals = await audit_entries(db, "agent8", "agent.login.refused")
    assert any(code.name in e.detail for e in refusals)


async def test_acd_down_is_503(db: Database, tokens: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    channel = rpc.channel(dead, test_tls.tls("crm"), "acd")
    cdrs = CdrStore(db)
    app = web_app(
        db,
        AgentControl(channel),
        cdrs,
        DeskHub(db, cdrs),
        gateway=CallCommands(nowhere("crm", "gateway")),
        recorder=RecordingArchive(nowhere("crm", "recorder")),
    )
    async with TestClient(TestServer(app)) as dead_client:
        headers = await as_user(dead_client, tokens, "agent10")
        response = await dead_client.post(
            "/api/agent/state", json={"state": "ready"}, headers=headers
        )
        assert (await error_of(response, 503)).startswith("ACD unavailable")
    await channel.close()


# -- the desktop itself ---------------------------------------------------------------------


async def test_desktop_is_served_with_the_ids_tests_and_agents_rely_on(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200
    html = await page.text()
    for element in (
        "username",
        "password",
        "login-btn",
        "login-error",
        "state",
        "ready-btn",
        "notready-btn",
        "reason",
        "call-panel",
        "caller-number",
        "customer-name",
        "queue-name",
    ):
        assert f'id="{element}"' in html, element
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("/static/desk.js", "/static/desk.css"):
        assert (await client.get(asset)).status == 200
    assert (await client.get("/static/../app.py")).status in (403, 404)


# -- the REST probes of issue 11 ------------------------------------------------------------


async def test_an_agent_logs_in_only_on_their_own_extension_or_an_approved_hot_desk(
    client: TestClient, tokens: dict[str, str], acd: tuple[FakeAcd, str], db: Database
) -> None:
    fake, _ = acd
    agent1 = await as_user(client, tokens, "agent1")
    response = await client.post("/api/agent/login", json={"extension": "8003"}, headers=agent1)
    message = await error_of(response, 403)
    assert message.startswith("extension 8003 is not agent1's and not an approved hot desk")
    assert not [r for name, r in fake.requests if name == "Login" and r.extension == "8003"]
    assert await audit_entries(db, "agent1", "agent.login.refused")

    admin = await as_user(client, tokens, "admin")
    refused = await client.post("/api/hotdesks", json={"extension": "8003"}, headers=admin)
    assert "is agent3's own extension" in await error_of(refused, 409)
    supervisor = await as_user(client, tokens, "supervisor")
    response = await client.post("/api/hotdesks", json={"extension": "8199"}, headers=supervisor)
    assert "may not use POST /api/hotdesks" in await error_of(response, 403)
    response = await client.post(
        "/api/hotdesks", json={"extension": "8199", "note": "spare desk"}, headers=admin
    )
    assert response.status == 201 and (await response.json())["approved_by"] == "admin"
    listed = await (await client.get("/api/hotdesks", headers=agent1)).json()
    assert "8199" in [d["extension"] for d in listed["hotdesks"]]
    response = await client.post("/api/agent/login", json={"extension": "8199"}, headers=agent1)
    assert response.status == 200 and (await response.json())["extension"] == "8199"
    response = await client.post("/api/agent/login", json={}, headers=agent1)  # own: 8001
    assert (await response.json())["extension"] == "8001"
    assert (await client.delete("/api/hotdesks/8199", headers=admin)).status == 200
    response = await client.post("/api/agent/login", json={"extension": "8199"}, headers=agent1)
    await error_of(response, 403)
    assert "is not a hot desk" in await error_of(
        await client.delete("/api/hotdesks/8199", headers=admin), 404
    )


async def test_a_cross_site_post_with_the_session_cookie_is_refused(
    client: TestClient, tokens: dict[str, str], acd: tuple[FakeAcd, str]
) -> None:
    """The issue's probe: a text/plain POST from another site, carrying the cookie."""
    fake, _ = acd
    token = await token_of(client, tokens, "agent2")
    cookie = {"Cookie": f"hotline_session={token}", "Content-Type": "text/plain"}
    await client.post("/api/agent/login", json={}, headers={"Authorization": f"Bearer {token}"})
    sent = len(fake.requests)
    body = '{"state": "ready"}'
    host = f"{client.host}:{client.port}"
    for forged in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
        {},  # neither header: a cookie alone does not say where the request came from
    ):
        response = await client.post("/api/agent/state", data=body, headers=cookie | forged)
        assert "cross-site request refused" in await error_of(response, 403), forged
    assert len(fake.requests) == sent, "nothing reached the ACD"
    for own in ({"Origin": f"http://{host}"}, {"Sec-Fetch-Site": "same-origin"}):
        response = await client.post("/api/agent/state", data=body, headers=cookie | own)
        assert response.status == 200, (own, await response.text())
    # a cross-site login (login CSRF) is refused too; GETs are not state-changing
    response = await client.post(
        "/api/login",
        json={"username": "agent2", "password": "agent2-demo"},
        headers={"Origin": "https://evil.example"},
    )
    await error_of(response, 403)
    me = await client.get("/api/me", headers={**cookie, "Sec-Fetch-Site": "cross-site"})
    assert me.status == 200


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
async def test_too_deep_json_is_400_never_500(
    client: TestClient, tokens: dict[str, str], depth: int
) -> None:
    headers = await as_user(client, tokens, "agent1")
    body = '{"state": ' + "[" * depth + "]" * depth + "}"
    response = await client.post(
        "/api/agent/state",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert "nested too deeply (at most 32 levels)" in await error_of(response, 400)


async def security_client(db: Database, acd: tuple[FakeAcd, str], **kw: Any) -> TestClient:
    channel = rpc.channel(acd[1], test_tls.tls("crm"), "acd")
    cdrs = CdrStore(db)
    # these tests never reach the gateway or the recorder
    app = web_app(
        db,
        AgentControl(channel),
        cdrs,
        DeskHub(db, cdrs),
        gateway=CallCommands(nowhere("crm", "gateway")),
        recorder=RecordingArchive(nowhere("crm", "recorder")),
        **kw,
    )
    return TestClient(TestServer(app))


async def test_logins_are_limited_per_address_before_any_password_work(
    db: Database, acd: tuple[FakeAcd, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = crm_auth.verify_password

    def counting(stored: str | None, password: str) -> bool:
        checked.append(password)
        return real(stored, password)

    monkeypatch.setattr(crm_auth, "verify_password", counting)
    async with await security_client(db, acd, addresses=AddressLimiter(per_minute=5)) as c:
        statuses = []
        for i in range(20):
            response = await c.post("/api/login", json={"username": f"ghost{i}", "password": "x"})
            statuses.append(response.status)
        assert statuses == [401] * 5 + [429] * 15
        assert len(checked) == 5, "no hash for a refused attempt"
        assert "too many login attempts from 127.0.0.1" in await error_of(response, 429)
        assert 1 <= int(response.headers["Retry-After"]) <= 12


async def test_guesses_at_one_account_from_many_addresses_are_limited(
    db: Database, acd: tuple[FakeAcd, str]
) -> None:
    """The issue's probe: 10 client addresses, 50 guesses at one account."""
    async with await security_client(
        db, acd, trusted_proxies=("127.0.0.1/32",), throttle=LoginThrottle()
    ) as c:
        statuses = []
        for i in range(50):
            response = await c.post(
                "/api/login",
                json={"username": "agent5", "password": f"guess{i}"},
                headers={"X-Forwarded-For": f"198.51.100.{i % 10 + 1}"},
            )
            statuses.append(response.status)
        assert statuses.count(401) == 10 and statuses.count(429) == 40
        response = await c.post(
            "/api/login",
            json={"username": "agent5", "password": "agent5-demo"},
            headers={"X-Forwarded-For": "198.51.100.99"},
        )
        assert "too many failed logins for agent5" in await error_of(response, 429)
        other = await c.post(
            "/api/login",
            json={"username": "agent6", "password": "agent6-demo"},
            headers={"X-Forwarded-For": "198.51.100.1"},
        )
        assert other.status == 200  # another account is not affected


async def test_parallel_logins_for_unknown_users_run_at_most_n_hashes(
    db: Database, acd: tuple[FakeAcd, str]
) -> None:
    """The issue's probe: 80 parallel logins for unknown users; hashes are capped and a
    queue too long is told to come back, and the API stays responsive meanwhile."""
    gate = HashGate(concurrent=2, max_waiting=8)
    async with await security_client(
        db, acd, hashes=gate, addresses=AddressLimiter(per_minute=1000)
    ) as c:
        token = await log_in(c, "agent9")
        logins = [
            c.post("/api/login", json={"username": f"nobody{i}", "password": "x"})
            for i in range(80)
        ]
        tasks = [asyncio.ensure_future(x) for x in logins]
        await asyncio.sleep(0.05)
        me = await c.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        # responsive meanwhile: the API answered while admitted logins were still hashing
        # (relative to the hashing itself, not a wall-clock threshold)
        still_hashing = sum(not t.done() for t in tasks)
        responses = await asyncio.gather(*tasks)
        assert me.status == 200 and still_hashing > 0
        statuses = [r.status for r in responses]
        assert set(statuses) <= {401, 503} and statuses.count(503) >= 60
        busy = next(r for r in responses if r.status == 503)
        assert "logins are waiting for a password check" in await error_of(busy, 503)
        assert busy.headers["Retry-After"] == "1"
        assert gate.peak <= 2
