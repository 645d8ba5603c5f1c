"""Demo data for a fresh database: the reference site's 16 agents, a supervisor, an admin and
a dozen customers, so `make run` is usable at once.

The demo passwords are documented in docs/crm.md; a real site changes them on day one. Each
table is seeded only when it is empty, so operators' own data is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crm.db import Database
from crm.models import Customer, DispositionCode, User
from crm.passwords import hash_password
from crm.phone import normalise
from crm.roles import Role

log = logging.getLogger(__name__)

AGENT_COUNT = 16
FIRST_EXTENSION = 8001

#: display names of agent1…agent16 (Chinese name, then the romanisation colleagues use).
AGENT_NAMES = (
    "李娜 Li Na",
    "王强 Wang Qiang",
    "刘洋 Liu Yang",
    "陈静 Chen Jing",
    "杨磊 Yang Lei",
    "赵敏 Zhao Min",
    "黄勇 Huang Yong",
    "周婷 Zhou Ting",
    "吴斌 Wu Bin",
    "徐丽 Xu Li",
    "孙浩 Sun Hao",
    "马琳 Ma Lin",
    "朱军 Zhu Jun",
    "胡雪 Hu Xue",
    "郭鹏 Guo Peng",
    "林芳 Lin Fang",
)


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: Role
    display_name: str
    agent_id: str | None = None
    extension: str | None = None


def demo_users() -> list[DemoUser]:
    """agent<N> / agent<N>-demo on extension 800<N>, plus supervisor and admin."""
    users = [
        DemoUser(
            f"agent{n}",
            f"agent{n}-demo",
            Role.AGENT,
            AGENT_NAMES[n - 1],
            agent_id=f"agent{n}",
            extension=str(FIRST_EXTENSION + n - 1),
        )
        for n in range(1, AGENT_COUNT + 1)
    ]
    users.append(DemoUser("supervisor", "supervisor-demo", Role.SUPERVISOR, "主管 王芳 Wang Fang"))
    users.append(DemoUser("admin", "admin-demo", Role.ADMIN, "系统管理员 Administrator"))
    return users


#: (name, phone as dialled, email, vip_tier, notes)
DEMO_CUSTOMERS: tuple[tuple[str, str, str, int, str], ...] = (
    ("张伟", "13800138000", "zhang.wei@example.cn", 2, "金卡会员,偏好下午回访。Gold member."),
    (
        "Demo Caller",
        "5551234",
        "demo.caller@example.com",
        1,
        "End-to-end test caller (SIPp). 端到端测试来电。",
    ),
    ("王秀英", "13912345678", "wang.xiuying@example.cn", 0, "宽带报修,工单跟进中。"),
    ("李明", "010-62345678", "li.ming@example.cn", 1, "企业客户,对账单有疑问。"),
    ("刘芳", "+86 137 0000 1111", "liu.fang@example.cn", 3, "钻石会员,专属客户经理。"),
    ("陈杰", "0086 150 2222 3333", "chen.jie@example.cn", 0, "上次投诉已回访,满意。"),
    ("杨丽", "18600001234", "yang.li@example.cn", 0, ""),
    (
        "Emily Carter",
        "+1 415 555 0100",
        "emily.carter@example.com",
        1,
        "Speaks English only; prefers e-mail follow-up.",
    ),
    ("John Smith", "4155550123", "john.smith@example.com", 0, "Asked about international roaming."),
    ("Maria Garcia", "6502530000", "maria.garcia@example.com", 2, "Premium plan since 2021."),
    ("赵磊", "021-58881234", "zhao.lei@example.cn", 0, "外地来电,需要普通话服务。"),
    ("Test Line 1000", "1000", "", 0, "Internal test number."),
)


#: wrap-up codes a fresh site starts with: (code, English, 中文); admins edit the table.
DISPOSITION_CODES: tuple[tuple[str, str, str], ...] = (
    ("resolved", "Resolved", "已解决"),
    ("info_given", "Information given", "咨询已答复"),
    ("ticket_opened", "Work order opened", "已建工单"),
    ("complaint", "Complaint", "投诉"),
    ("sales", "Sale / upgrade", "销售 / 升级"),
    ("transferred", "Transferred", "已转接"),
    ("wrong_number", "Wrong number", "打错电话"),
    ("silent", "Silent / dropped call", "无声 / 掉线"),
    ("other", "Other", "其他"),
)


async def seed(db: Database) -> None:
    """Insert demo users, customers and wrap-up codes into empty tables (safe on every start)."""
    async with db.sessions() as session:
        have_users = await session.scalar(select(func.count()).select_from(User))
        have_customers = await session.scalar(select(func.count()).select_from(Customer))
        have_codes = await session.scalar(select(func.count()).select_from(DispositionCode))
    if not have_users:
        await _seed_users(db)
    if not have_customers:
        await _seed_customers(db)
    if not have_codes:
        await _seed_codes(db)


async def _seed_codes(db: Database) -> None:
    async with db.sessions() as session:
        session.add_all(
            DispositionCode(code=code, label_en=en, label_zh=zh, position=n, active=True)
            for n, (code, en, zh) in enumerate(DISPOSITION_CODES)
        )
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()  # another replica seeded them first
            return
    log.info("seeded %d disposition codes", len(DISPOSITION_CODES))


async def _seed_users(db: Database) -> None:
    people = demo_users()
    hashes = await asyncio.gather(*(asyncio.to_thread(hash_password, p.password) for p in people))
    async with db.sessions() as session:
        session.add_all(
            User(
                username=p.username,
                password_hash=h,
                role=p.role.value,
                display_name=p.display_name,
                agent_id=p.agent_id,
                extension=p.extension,
            )
            for p, h in zip(people, hashes, strict=False)
        )
        try:
            await session.commit()
        except IntegrityError:
            # Another replica seeded the same users first; theirs are as good as ours.
            await session.rollback()
            return
    log.info("seeded %d demo users (passwords in docs/crm.md)", len(people))


async def _seed_customers(db: Database) -> None:
    async with db.sessions() as session:
        session.add_all(
            Customer(name=name, phone=normalise(phone), email=email, vip_tier=tier, notes=notes)
            for name, phone, email, tier, notes in DEMO_CUSTOMERS
        )
        await session.commit()
    log.info("seeded %d demo customers", len(DEMO_CUSTOMERS))
