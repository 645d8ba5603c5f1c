"""The agent desk's call control, wrap-up, history and screen lock over REST, against real
databases (SQLite and PostgreSQL), the ACD peer of test_crm_api and a gateway `CallControl`
peer (tests.crm_peers) on real mTLS gRPC servers.

Every test runs once per backend (the fixtures are test_crm_api's).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from crm.api import CDRS
from crm.cdr_store import CdrStore
from crm.db import Database
from crm.models import CallbackTask, DialOut, utcnow
from hotline.v1 import acd_pb2
from hotline.v1 import events_pb2 as ev
from hotline.v1 import gateway_pb2 as gw
from tests.crm_peers import FakeCallControl, FakeRecorder, LiveCall
from tests.integration import test_crm_api as base
from tests.integration.test_crm_api import (
    FakeAcd,
    as_user,
    audit_entries,
    call_events,
    error_of,
    event,
    token_of,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# the fixtures of test_crm_api, instantiated for this module
db, acd, gateway, recorder, client, tokens = (
    base.db,
    base.acd,
    base.gateway,
    base.recorder,
    base.client,
    base.tokens,
)

Peers = tuple[FakeCallControl, int]


def on_call(fake_acd: FakeAcd, agent_id: str, extension: str, call_id: str) -> None:
    """The ACD has `agent_id` on `call_id` (as after a bridge)."""
    fake_acd.agents[agent_id] = acd_pb2.Agent(
        agent_id=agent_id, extension=extension, state=ev.AGENT_STATE_ON_CALL, call_id=call_id
    )


def live(peers: Peers, call_id: str) -> LiveCall:
    call = LiveCall()
    peers[0].calls[call_id] = call
    return call


def new_call() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def sent(peers: Peers, name: str) -> list[Any]:
    return [r for n, r in peers[0].requests if n == name]


# -- who may act on a call ------------------------------------------------------------------


async def test_the_agent_on_the_call_holds_and_resumes_it_audited(
    client: TestClient,
    tokens: dict[str, str],
    acd: tuple[FakeAcd, str],
    gateway: Peers,
    db: Database,
) -> None:
    call_id = new_call()
    on_call(acd[0], "agent1", "8001", call_id)
    call = live(gateway, call_id)
    headers = await as_user(client, tokens, "agent1")
    response = await client.post(f"/api/calls/{call_id}/hold", headers=headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["held"] is True and call.held
    response = await client.post(f"/api/calls/{call_id}/resume", headers=headers)
    assert response.status == 200 and not call.held
    assert [e.target for e in await audit_entries(db, "agent1", "call.hold")] == [call_id]
    assert [e.target for e in await audit_entries(db, "agent1", "call.resume")] == [call_id]
    # resuming a call that is not held: the gateway's reason, as a conflict
    message = await error_of(
        await client.post(f"/api/calls/{call_id}/resume", headers=headers), 409
    )
    assert message == "call is not on hold"
    refused = await audit_entries(db, "agent1", "call.resume.refused")
    assert "FAILED_PRECONDITION: call is not on hold" in refused[-1].detail


async def test_an_agent_cannot_act_on_another_agents_call_a_supervisor_can(
    client: TestClient,
    tokens: dict[str, str],
    acd: tuple[FakeAcd, str],
    gateway: Peers,
    db: Database,
) -> None:
    call_id = new_call()
    on_call(acd[0], "agent2", "8002", call_id)
    store: CdrStore = client.server.app[CDRS]
    for e in call_events(call_id, "agent2", "8002")[:4]:  # bridged, not ended
        await store.apply(e)
    call = live(gateway, call_id)
    agent3 = await as_user(client, tokens, "agent3")
    for path, body in (
        ("hold", None),
        ("hangup", None),
        ("mute", {"muted": True}),
        ("transfer", {"kind": "blind", "target_kind": "extension", "target": "8003"}),
    ):
        response = await client.post(f"/api/calls/{call_id}/{path}", json=body, headers=agent3)
        assert "is not agent3's" in await error_of(response, 403), path
    assert gateway[0].requests == [] and not call.held and not call.muted
    assert len(await audit_entries(db, "agent3", "call.hold.refused")) == 1
    assert len(await audit_entries(db, "agent3", "call.transfer.refused")) == 1

    # the owner by the CDR (the ACD may have moved on) and a supervisor may
    acd[0].agents.pop("agent2")
    agent2 = await as_user(client, tokens, "agent2")
    assert (await client.post(f"/api/calls/{call_id}/hold", headers=agent2)).status == 200
    boss = await as_user(client, tokens, "supervisor")
    response = await client.post(f"/api/calls/{call_id}/mute", json={"muted": True}, headers=boss)
    assert response.status == 200 and call.muted
    assert [e.target for e in await audit_entries(db, "supervisor", "call.mute")] == [call_id]
    # a call that does not exist (any more) is the gateway's 404
    gone = new_call()
    response = await client.post(f"/api/calls/{gone}/hangup", headers=boss)
    assert "does not exist or has ended" in await error_of(response, 404)
    # an ended call is nobody's to act on but a supervisor's
    for e in call_events(call_id, "agent2", "8002")[4:]:
        await store.apply(e)
    response = await client.post(f"/api/calls/{call_id}/resume", headers=agent2)
    await error_of(response, 403)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("transfer", {"kind": "warm", "target_kind": "extension", "target": "8002"}, "field kind"),
        ("transfer", {"kind": "blind", "target_kind": "agent", "target": "x"}, "target_kind"),
        ("transfer", {"kind": "consult", "target_kind": "queue", "target": "vip"}, "target_kind"),
        ("transfer", {"kind": "blind", "target_kind": "extension", "target": "80a"}, "digits"),
        ("transfer", {"kind": "blind", "target_kind": "queue", "target": "a b"}, "queue name"),
        ("transfer", {"kind": "blind", "target_kind": "number", "target": "12x"}, "'x'"),
        ("conference", {"target_kind": "queue", "target": "support"}, "target_kind"),
        ("mute", {"muted": "yes"}, "true or false"),
        ("digits", {"digits": "12;3"}, "0-9, *, # and A-D"),
        ("digits", {}, "missing field: digits"),
    ],
)
async def test_bad_call_commands_are_400_naming_the_field(
    client: TestClient,
    tokens: dict[str, str],
    acd: tuple[FakeAcd, str],
    gateway: Peers,
    path: str,
    body: dict[str, Any],
    message: str,
) -> None:
    call_id = new_call()
    on_call(acd[0], "agent4", "8004", call_id)
    live(gateway, call_id)
    headers = await as_user(client, tokens, "agent4")
    response = await client.post(f"/api/calls/{call_id}/{path}", json=body, headers=headers)
    assert message in await error_of(response, 400)
    assert gateway[0].requests == []


# -- transfer, consult, conference, keypad --------------------------------------------------


async def test_transfers_consults_and_conferences_reach_the_gateway(
    client: TestClient,
    tokens: dict[str, str],
    acd: tuple[FakeAcd, str],
    gateway: Peers,
    db: Database,
) -> None:
    headers = await as_user(client, tokens, "agent5")
    call_id = new_call()
    on_call(acd[0], "agent5", "8005", call_id)
    call = live(gateway, call_id)

    async def post(path: str, body: Any = None, status: int = 200) -> dict[str, Any]:
        response = await client.post(f"/api/calls/{call_id}/{path}", json=body, headers=headers)
        assert response.status == status, await response.text()
        doc: dict[str, Any] = await response.json()
        return doc

    # a blind transfer nobody answers leaves the call with the agent
    reply = await post("transfer", {"kind": "blind", "target_kind": "extension", "target": "8999"})
    assert (reply["result"], reply["detail"]) == ("no_answer", "8999 did not answer")
    (request,) = sent(gateway, "Transfer")
    assert (request.target_kind, request.by_agent_id) == (gw.TARGET_KIND_EXTENSION, "agent5")
    assert request.ring_timeout_ms == 30_000

    # consult: swap, cancel, consult again, complete
    reply = await post(
        "transfer", {"kind": "consult", "target_kind": "number", "target": "+86 10 6234-5678"}
    )
    assert reply["result"] == "answered" and reply["leg_id"] and call.held
    assert sent(gateway, "Consult")[0].target == "00861062345678"
    assert (await post("consult/swap"))["action"] == "swap"
    await post("consult/cancel")
    assert not call.held and not call.consult_leg
    assert "no consult in progress" in (await post("consult/cancel", status=409))["error"]
    assert "no consult action" in (await post("consult/merge", status=404))["error"]

    # conference and keypad
    reply = await post("conference", {"target_kind": "extension", "target": "8006"})
    assert (reply["result"], reply["parties"]) == ("answered", 3)
    response = await client.delete(
        f"/api/calls/{call_id}/conference/{reply['leg_id']}", headers=headers
    )
    assert response.status == 200 and call.parties == 2
    assert (await post("digits", {"digits": "12#"}))["sent"] == 3 and call.digits == "12#"
    (digits,) = await audit_entries(db, "agent5", "call.digits")
    assert "12#" not in digits.detail  # keypad input may be a PIN: never in the audit trail

    await post("transfer", {"kind": "consult", "target_kind": "extension", "target": "8006"})
    await post("consult/complete")
    assert call_id not in gateway[0].calls
    actions = {
        e.action
        for e in await audit_entries(db, "agent5", "call.consult")
        + await audit_entries(db, "agent5", "call.consult.complete")
        + await audit_entries(db, "agent5", "call.conference.add")
        + await audit_entries(db, "agent5", "call.conference.remove")
    }
    assert actions == {
        "call.consult",
        "call.consult.complete",
        "call.conference.add",
        "call.conference.remove",
    }


async def test_a_blind_transfer_to_a_queue(
    client: TestClient, tokens: dict[str, str], acd: tuple[FakeAcd, str], gateway: Peers
) -> None:
    call_id = new_call()
    on_call(acd[0], "agent6", "8006", call_id)
    live(gateway, call_id)
    response = await client.post(
        f"/api/calls/{call_id}/transfer",
        json={"kind": "blind", "target_kind": "queue", "target": "vip"},
        headers=await as_user(client, tokens, "agent6"),
    )
    assert (await response.json())["result"] == "answered"
    (request,) = sent(gateway, "Transfer")
    assert (request.target_kind, request.target) == (gw.TARGET_KIND_QUEUE, "vip")


# -- click-to-dial --------------------------------------------------------------------------


async def test_click_to_dial_rings_the_agent_first_within_the_roles_dial_class(
    client: TestClient,
    tokens: dict[str, str],
    acd: tuple[FakeAcd, str],
    gateway: Peers,
    db: Database,
) -> None:
    agent7 = await as_user(client, tokens, "agent7")
    # an agent's class is local: an international number is the gateway's 403, audited
    response = await client.post("/api/dial", json={"number": "+1 415 555 0100"}, headers=agent7)
    assert "class local may not dial it" in await error_of(response, 403)
    assert "PERMISSION_DENIED" in (await audit_entries(db, "agent7", "call.dial.refused"))[0].detail
    # logged in on a hot desk, that phone rings first
    acd[0].agents["agent7"] = acd_pb2.Agent(
        agent_id="agent7", extension="8100", state=ev.AGENT_STATE_NOT_READY
    )
    response = await client.post(
        "/api/dial", json={"number": "138-0013-8000", "customer_id": 1}, headers=agent7
    )
    assert response.status == 200, await response.text()
    reply = await response.json()
    assert (reply["number"], reply["dial_class"], reply["result"]) == (
        "13800138000",
        "local",
        "answered",
    )
    request = sent(gateway, "DialOut")[-1]
    assert (request.agent_id, request.endpoint, request.dial_class, request.customer_id) == (
        "agent7",
        "8100",
        "local",
        "1",
    )
    assert request.ring_timeout_ms == 30_000
    async with db.sessions() as session:
        row = await session.scalar(select(DialOut).where(DialOut.call_id == reply["call_id"]))
    assert row is not None and (row.agent_id, row.customer_id) == ("agent7", 1)
    # the dialled call is the agent's to act on
    response = await client.post(f"/api/calls/{reply['call_id']}/hangup", headers=agent7)
    assert response.status == 200, await response.text()

    # a team leader may call long distance; bad numbers and customers are 400 / 404
    lead = await as_user(client, tokens, "lead1")
    response = await client.post("/api/dial", json={"number": "02158881234"}, headers=lead)
    assert (await response.json())["dial_class"] == "long_distance"
    for body, status, message in (
        ({"number": "call me"}, 400, "field number"),
        ({"number": ""}, 400, "field number"),
        ({"number": "5551234", "customer_id": "1"}, 400, "customer_id"),
        ({"number": "5551234", "customer_id": 999_999}, 404, "no customer 999999"),
    ):
        assert message in await error_of(
            await client.post("/api/dial", json=body, headers=lead), status
        )
    # a supervisor has no phone of their own to ring first
    boss = await as_user(client, tokens, "supervisor")
    response = await client.post("/api/dial", json={"number": "5551234"}, headers=boss)
    assert "no extension to ring first" in await error_of(response, 409)


# -- wrap-up ---------------------------------------------------------------------------------


async def test_desk_config_has_acw_hold_reminders_codes_and_dial_class(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = await client.get("/api/desk/config", headers=await as_user(client, tokens, "agent1"))
    doc = await response.json()
    assert (doc["acw_s"], doc["hold_remind_s"], doc["hold_warn_s"], doc["dial_class"]) == (
        60,
        15,
        30,
        "local",
    )
    assert "meal" in doc["not_ready_reasons"]
    codes = {c["code"]: c for c in doc["dispositions"]}
    assert codes["resolved"] == {"code": "resolved", "en": "Resolved", "zh-CN": "已解决"}


async def test_a_disposition_with_follow_up_files_a_callback_and_ends_wrap_up(
    client: TestClient,
    tokens: dict[str, str],
    acd: tuple[FakeAcd, str],
    db: Database,
) -> None:
    call_id = new_call()
    store: CdrStore = client.server.app[CDRS]
    for e in call_events(call_id, "agent8", "8008", ani="13800138000"):
        await store.apply(e)
    acd[0].agents["agent8"] = acd_pb2.Agent(
        agent_id="agent8", extension="8008", state=ev.AGENT_STATE_WRAP_UP, call_id=call_id
    )
    headers = await as_user(client, tokens, "agent8")
    due = (utcnow() + timedelta(days=1)).isoformat()
    path = f"/api/calls/{call_id}/disposition"
    for body, message in (
        ({"code": "nope"}, "field code must be one of"),
        ({}, "missing field: code"),
        ({"code": "resolved", "notes": "x" * 2001}, "longer than 2000"),
        ({"code": "resolved", "follow_up": {"due_at": "tomorrow"}}, "not an ISO-8601 time"),
        ({"code": "resolved", "follow_up": {"due_at": "2026-12-01T09:00:00"}}, "time zone"),
        ({"code": "resolved", "follow_up": {"due_at": "2020-01-01T09:00:00Z"}}, "in the past"),
    ):
        assert message in await error_of(await client.post(path, json=body, headers=headers), 400)
    other = await as_user(client, tokens, "agent9")
    response = await client.post(path, json={"code": "resolved"}, headers=other)
    assert "not agent9's" in await error_of(response, 403)

    body = {"code": "complaint", "notes": "账单有误", "follow_up": {"due_at": due}}
    response = await client.post(path, json=body, headers=headers)
    assert response.status == 201, await response.text()
    reply = await response.json()
    callback = reply["callback"]
    assert (callback["phone"], callback["customer_id"], callback["notes"]) == (
        "13800138000",
        1,
        "账单有误",
    )
    assert reply["agent"]["state"] == "ready"  # filing the form ends the wrap-up
    assert acd[0].requests[-1][0] == "SetState"
    assert "already has a disposition" in await error_of(
        await client.post(path, json=body, headers=headers), 409
    )
    doc = await (await client.get(f"/api/cdrs/{call_id}", headers=headers)).json()
    assert (doc["disposition"]["code"], doc["disposition"]["notes"]) == ("complaint", "账单有误")
    listed = await (await client.get("/api/callbacks", headers=headers)).json()
    assert callback["id"] in {c["id"] for c in listed["callbacks"]}
    theirs = await (await client.get("/api/callbacks", headers=other)).json()
    assert callback["id"] not in {c["id"] for c in theirs["callbacks"]}
    async with db.sessions() as session:
        assert await session.get(CallbackTask, callback["id"]) is not None
    assert len(await audit_entries(db, "agent8", "call.disposition")) == 1
    # the callback is the agent's to close (a watcher's too), once
    done = f"/api/callbacks/{callback['id']}/done"
    assert "is not agent9's" in await error_of(await client.post(done, headers=other), 403)
    response = await client.post(done, headers=headers)
    assert (await response.json())["status"] == "done"
    assert "already done" in await error_of(await client.post(done, headers=headers), 409)
    assert [e.target for e in await audit_entries(db, "agent8", "callback.done")] == [
        str(callback["id"])
    ]
    listed = await (await client.get("/api/callbacks", headers=headers)).json()
    assert callback["id"] not in {c["id"] for c in listed["callbacks"]}  # open ones by default
    assert (await audit_entries(db, "agent8", "agent.state"))[-1].detail == (
        "ready (disposition filed)"
    )


async def test_an_admin_configures_the_wrap_up_codes(
    client: TestClient, tokens: dict[str, str], db: Database
) -> None:
    admin = await as_user(client, tokens, "admin")
    agent = await as_user(client, tokens, "agent1")
    body = {"en": "Retention offer", "zh-CN": "挽留优惠", "position": 5}
    response = await client.put("/api/dispositions/retention", json=body, headers=admin)
    assert response.status == 201, await response.text()
    config = await (await client.get("/api/desk/config", headers=agent)).json()
    assert {"code": "retention", "en": "Retention offer", "zh-CN": "挽留优惠"} in config[
        "dispositions"
    ]
    response = await client.put(
        "/api/dispositions/retention", json=body | {"active": False}, headers=admin
    )
    assert response.status == 200
    config = await (await client.get("/api/desk/config", headers=agent)).json()
    assert "retention" not in {c["code"] for c in config["dispositions"]}
    every = await (await client.get("/api/dispositions", headers=admin)).json()
    assert any(c["code"] == "retention" and not c["active"] for c in every["dispositions"])
    for path, payload, message in (
        ("/api/dispositions/Bad-Code", body, "lowercase"),
        ("/api/dispositions/ok", {"en": "x"}, "missing field: zh-CN"),
        ("/api/dispositions/ok", body | {"active": "no"}, "true or false"),
        ("/api/dispositions/ok", body | {"position": 5000}, "0 to 999"),
    ):
        response = await client.put(path, json=payload, headers=admin)
        assert message in await error_of(response, 400), path
    assert len(await audit_entries(db, "admin", "disposition.code")) == 2


# -- history ---------------------------------------------------------------------------------


async def test_customer_history_shows_every_contact_and_only_playable_recordings(
    client: TestClient, tokens: dict[str, str], db: Database
) -> None:
    store: CdrStore = client.server.app[CDRS]
    mine, colleagues = new_call(), new_call()
    for e in call_events(mine, "agent10", "8010", ani="sip:+8613912345678@trunk"):
        await store.apply(e)
    for e in call_events(colleagues, "agent11", "8011", ani="13912345678"):
        await store.apply(e)
    headers = await as_user(client, tokens, "agent10")
    customer = await (await client.get("/api/customers?phone=13912345678", headers=headers)).json()
    response = await client.get(f"/api/customers/{customer['id']}/history", headers=headers)
    doc = await response.json()
    contacts = {c["call_id"]: c for c in doc["contacts"]}
    assert {mine, colleagues} <= set(contacts)
    assert contacts[mine]["recordings"][0]["playable"] is True
    assert contacts[mine]["recordings"][0]["path"] == f"rec/{mine}.wav"
    assert contacts[colleagues]["recordings"][0]["playable"] is False
    assert contacts[colleagues]["recordings"][0]["path"] == ""
    assert contacts[colleagues]["recording_path"] == ""
    qa = await as_user(client, tokens, "qa1")
    doc = await (await client.get(f"/api/customers/{customer['id']}/history", headers=qa)).json()
    assert all(r["playable"] for c in doc["contacts"] for r in c["recordings"])
    assert "no customer" in await error_of(
        await client.get("/api/customers/999999/history", headers=headers), 404
    )
    assert "must be a number" in await error_of(
        await client.get("/api/customers/abc/history", headers=headers), 400
    )


async def test_playing_a_recording_follows_the_recording_rules_and_is_audited(
    client: TestClient,
    tokens: dict[str, str],
    recorder: tuple[FakeRecorder, int],
    db: Database,
) -> None:
    store: CdrStore = client.server.app[CDRS]
    mine, theirs = new_call(), new_call()
    for e in call_events(mine, "agent10", "8010") + call_events(theirs, "agent11", "8011"):
        await store.apply(e)
    wav = b"RIFF" + bytes(range(256)) * 20  # 5 KB: several chunks
    recorder[0].stored[f"rec-{mine}"] = wav
    recorder[0].stored[f"rec-{theirs}"] = wav
    agent10 = await as_user(client, tokens, "agent10")
    response = await client.get(f"/api/cdrs/{mine}/recordings/rec-{mine}", headers=agent10)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "audio/wav"
    assert int(response.headers["Content-Length"]) == len(wav)
    assert await response.read() == wav
    assert [e.target for e in await audit_entries(db, "agent10", "recording.play")] == [
        f"rec-{mine}"
    ]
    response = await client.get(f"/api/cdrs/{theirs}/recordings/rec-{theirs}", headers=agent10)
    assert "may not play" in await error_of(response, 403)
    assert len(await audit_entries(db, "agent10", "recording.play.refused")) == 1
    qa = await as_user(client, tokens, "qa1")
    response = await client.get(f"/api/cdrs/{theirs}/recordings/rec-{theirs}", headers=qa)
    assert await response.read() == wav
    # a recording the call does not have, and one the recorder does not have
    response = await client.get(f"/api/cdrs/{mine}/recordings/rec-{theirs}", headers=qa)
    assert "has no recording" in await error_of(response, 404)
    del recorder[0].stored[f"rec-{mine}"]
    response = await client.get(f"/api/cdrs/{mine}/recordings/rec-{mine}", headers=qa)
    assert f"no recording rec-{mine}" in await error_of(response, 404)


# -- screen lock -----------------------------------------------------------------------------


async def test_a_locked_desk_shows_nothing_until_the_password(
    client: TestClient, tokens: dict[str, str], db: Database
) -> None:
    token = await token_of(client, tokens, "agent12")
    headers = {"Authorization": f"Bearer {token}"}
    ws = await client.ws_connect(f"/ws?token={token}")
    assert (await ws.receive_json())["type"] == "hello"
    assert (await (await client.post("/api/lock", headers=headers)).json())["locked"] is True
    closed = await ws.receive()
    assert ws.close_code == 4003, closed
    for method, path in (("GET", "/api/cdrs"), ("GET", "/api/customers?phone=5551234")):
        response = await client.request(method, path, headers=headers)
        assert "desk is locked" in await error_of(response, 423), path
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect(f"/ws?token={token}")
    assert refused.value.status == 423
    me = await (await client.get("/api/me", headers=headers)).json()
    assert me["locked"] is True and me["username"] == "agent12"
    response = await client.post("/api/unlock", json={"password": "wrong"}, headers=headers)
    assert "stays locked" in await error_of(response, 403)
    assert len(await audit_entries(db, "agent12", "desk.unlock.failed")) == 1
    response = await client.post("/api/unlock", json={"password": "agent12-demo"}, headers=headers)
    assert response.status == 200
    assert (await client.get("/api/cdrs", headers=headers)).status == 200
    assert len(await audit_entries(db, "agent12", "desk.lock")) == 1
    assert len(await audit_entries(db, "agent12", "desk.unlock")) == 1


async def test_the_desk_language_is_the_users_setting(
    client: TestClient, tokens: dict[str, str]
) -> None:
    headers = await as_user(client, tokens, "agent13")
    for language in ("en", "zh-CN", ""):
        response = await client.post(
            "/api/me/language", json={"language": language}, headers=headers
        )
        assert response.status == 200
        assert (await (await client.get("/api/me", headers=headers)).json())["language"] == language
    response = await client.post("/api/me/language", json={"language": "fr"}, headers=headers)
    assert "must be one of" in await error_of(response, 400)


async def test_the_directory_lists_agents_with_presence_and_queues(
    client: TestClient, tokens: dict[str, str], acd: tuple[FakeAcd, str]
) -> None:
    on_call(acd[0], "agent14", "8014", "x")
    response = await client.get(
        "/api/desk/directory", headers=await as_user(client, tokens, "agent1")
    )
    assert response.status == 200, await response.text()
    doc = await response.json()
    agents = {a["agent_id"]: a for a in doc["agents"]}
    assert agents["agent14"] == {
        "agent_id": "agent14",
        "display_name": "胡雪 Hu Xue",
        "extension": "8014",
        "state": "on_call",
    }
    assert [q["name"] for q in doc["queues"]] == ["support", "vip"]


async def test_cdr_folds_hold_transfer_conference_and_after_call_work(db: Database) -> None:
    store = CdrStore(db)
    call_id = new_call()
    events = call_events(call_id, "agent15", "8015")[:4] + [
        event(ev.CallHeld(call_id=call_id, agent_id="agent15", by="desk"), call_id, 33),
        event(ev.CallResumed(call_id=call_id, agent_id="agent15", held_ms=2000), call_id, 31),
        event(
            ev.ConferenceJoined(call_id=call_id, leg_id="l2", party="8016", parties=3), call_id, 30
        ),
        event(
            ev.ConferenceLeft(call_id=call_id, leg_id="l2", party="8016", parties=2), call_id, 25
        ),
        event(
            ev.CallTransferred(
                call_id=call_id,
                from_agent_id="agent15",
                to_agent_id="agent16",
                kind="blind",
                target_kind="extension",
                target="8016",
            ),
            call_id,
            20,
        ),
        event(
            ev.CallEnded(
                call_id=call_id, reason=ev.END_REASON_CALLER_HANGUP, hold_ms=2000, hold_count=1
            ),
            call_id,
            10,
        ),
        event(
            ev.AgentStateChanged(
                agent_id="agent16",
                state=ev.AGENT_STATE_WRAP_UP,
                previous=ev.AGENT_STATE_ON_CALL,
                call_id=call_id,
            ),
            "agent16",
            10,
        ),
        event(
            ev.AgentStateChanged(
                agent_id="agent16", state=ev.AGENT_STATE_READY, previous=ev.AGENT_STATE_WRAP_UP
            ),
            "agent16",
            4,
        ),
    ]
    for e in events:
        await store.apply(e)
    row = await store.get(call_id)
    assert row is not None
    assert (row.agent_id, row.hold_ms, row.hold_count) == ("agent16", 2000, 1)
    # the events' times are "seconds ago", taken a moment apart: a few ms of slack
    assert row.talk_ms is not None and abs(row.talk_ms - (25_000 - 2000)) < 100
    assert row.acw_ms is not None and abs(row.acw_ms - 6000) < 100
    assert row.handle_ms == row.talk_ms + 2000 + row.acw_ms
    assert [(t["from_agent_id"], t["to_agent_id"]) for t in row.transfers] == [
        ("agent15", "agent16")
    ]
    assert [(p["party"], bool(p["left_at"])) for p in row.conference] == [("8016", True)]
