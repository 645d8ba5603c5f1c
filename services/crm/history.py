"""A customer's contact history: every call from or to their numbers, whoever took it, with
its wrap-up, its recordings and the callbacks promised — the screen pop's and the customer
card's "what happened before".

Every user who may see the customer sees every contact (an agent needs the colleague's call of
yesterday); recordings follow the recording rules: the roles that read every CDR may play
any, an agent those of calls they took (or were transferred).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import or_, select

from crm.app_keys import CDRS
from crm.auth import DB, current_user
from crm.cdr_store import to_json
from crm.models import CallbackTask, Cdr, Customer, DialOut, User
from crm.rest import ApiError
from crm.roles import ALL_CDR_READERS

MAX_CONTACTS = 200


def may_play(user: User, row: Cdr) -> bool:
    """Whether `user` may play the recordings of the call `row`."""
    if user.role in ALL_CDR_READERS:
        return True
    mine = user.agent_id or ""
    if not mine:
        return False
    return row.agent_id == mine or any(
        mine in (t.get("from_agent_id"), t.get("to_agent_id")) for t in row.transfers or []
    )


def _contact(row: Cdr, user: User, disposition: Any) -> dict[str, Any]:
    doc = to_json(row, disposition)
    playable = may_play(user, row)
    doc["recordings"] = [dict(r, playable=playable) for r in row.recordings or []]
    if not playable:  # where a recording is stored is not for users who may not play it
        doc["recording_path"] = ""
        for r in doc["recordings"]:
            r["path"] = ""
    return doc


async def customer_history(request: web.Request) -> web.Response:
    """GET /api/customers/{customer_id}/history: the customer, every contact, open callbacks."""
    user = current_user(request)
    raw = request.match_info["customer_id"]
    if not raw.isdigit():
        raise ApiError(400, "customer id must be a number")
    async with request.app[DB].sessions() as session:
        customer = await session.get(Customer, int(raw))
        if customer is None:
            raise ApiError(404, f"no customer {raw}")
        dialled = list(
            await session.scalars(
                select(DialOut.call_id).where(
                    or_(DialOut.customer_id == customer.id, DialOut.number == customer.phone),
                    DialOut.call_id != "",
                )
            )
        )
        callbacks = list(
            await session.scalars(
                select(CallbackTask)
                .where(
                    or_(
                        CallbackTask.customer_id == customer.id,
                        CallbackTask.phone == customer.phone,
                    )
                )
                .order_by(CallbackTask.due_at.desc())
                .limit(MAX_CONTACTS)
            )
        )
    store = request.app[CDRS]
    rows = await store.of_numbers([customer.phone], dialled, MAX_CONTACTS)
    dispositions = await store.dispositions([r.call_id for r in rows])
    outbound = set(dialled)
    contacts = []
    for row in rows:
        doc = _contact(row, user, dispositions.get(row.call_id))
        doc["direction"] = "outbound" if row.call_id in outbound else "inbound"
        contacts.append(doc)
    return web.json_response(
        {
            "customer": customer.public(),
            "contacts": contacts,
            "callbacks": [c.public() for c in callbacks],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/customers/{customer_id}/history", customer_history)
