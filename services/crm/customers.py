"""Finding the customer behind a calling number (screen pop, IVR routing, REST)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Customer
from crm.phone import normalise


async def find_by_phone(session: AsyncSession, number: str) -> Customer | None:
    """The customer whose stored number matches `number` after normalisation.

    Several customers may share a line (a household, a switchboard); the oldest record is
    the account holder and wins. A number with no digits (e.g. "sipp") matches nobody.
    """
    phone = normalise(number)
    if not phone:
        return None
    query = select(Customer).where(Customer.phone == phone).order_by(Customer.id).limit(1)
    return await session.scalar(query)
