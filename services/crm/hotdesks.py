"""Extensions an agent may log in on: their own, or an admin-approved hot desk.

An agent's seat in the ACD decides where their calls ring, so the extension is not the
agent's free choice: agent1 logging in on agent3's extension would take agent3's calls. A
user's own extension is on their user row; a hot desk is an extension an admin approved for
any agent (a shared or spare desk), one row per extension in `hot_desks`, audited.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import HotDesk, User

__all__ = ["approve", "is_hot_desk", "may_use", "owner_of", "withdraw"]


async def is_hot_desk(session: AsyncSession, extension: str) -> bool:
    return await session.get(HotDesk, extension) is not None


async def owner_of(session: AsyncSession, extension: str) -> User | None:
    """The user whose own extension this is, if any."""
    return await session.scalar(select(User).where(User.extension == extension).limit(1))


async def may_use(session: AsyncSession, user: User, extension: str) -> bool:
    """Whether `user` may log in on `extension`."""
    return extension == user.extension or await is_hot_desk(session, extension)


async def approve(session: AsyncSession, extension: str, by: str, note: str) -> HotDesk:
    desk = HotDesk(extension=extension, approved_by=by, note=note)
    session.add(desk)
    return desk


async def withdraw(session: AsyncSession, extension: str) -> bool:
    desk = await session.get(HotDesk, extension)
    if desk is None:
        return False
    await session.delete(desk)
    return True
