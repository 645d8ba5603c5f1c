"""The agent desktop in a real Chromium: sign-in, seat control and the screen pop.

The CRM web app runs in-process on SQLite with a real gRPC ACD peer on loopback; events are
handed to the consumer handler directly (the Kafka path is covered end to end elsewhere).
Skips only when no Chromium is installed (`make setup` installs one).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Error, Page, async_playwright, expect

from acd.servicer import AcdService
from common.events import envelope
from crm.agent_control import AgentControl
from crm.app import web_app
from crm.call_commands import CallCommands
from crm.cdr_store import CdrStore
from crm.db import Database
from crm.desk import DeskHub
from crm.intake import EventIntake
from crm.recording_archive import RecordingArchive
from crm.seed import seed
from hotline.v1 import acd_pb2, acd_pb2_grpc
from hotline.v1 import events_pb2 as ev
from tests import tls as test_tls
from tests.crm_peers import FakeCallControl, gateway_server, nowhere

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _chromium() -> str | None:
    """Playwright's own browser when installed, else the system Chromium."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


class SeatAcd(acd_pb2_grpc.AcdServicer):
    """Just enough ACD for a desk: one seat per agent, ready / not ready."""

    def __init__(self) -> None:
        self.agents: dict[str, acd_pb2.Agent] = {}

    async def Login(
        self, request: acd_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        agent = acd_pb2.Agent(
            agent_id=request.agent_id,
            extension=request.extension,
            state=ev.AGENT_STATE_NOT_READY,
            reason="login",
        )
        self.agents[request.agent_id] = agent
        return agent

    async def SetState(
        self, request: acd_pb2.SetStateRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        if request.agent_id not in self.agents:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not logged in")
        agent = self.agents[request.agent_id]
        agent.state, agent.reason = request.state, request.reason
        return agent

    async def Logout(
        self, request: acd_pb2.AgentRef, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        agent = self.agents[request.agent_id]
        agent.state = ev.AGENT_STATE_LOGGED_OUT
        return agent

    async def GetAgent(
        self, request: acd_pb2.AgentRef, context: grpc.aio.ServicerContext
    ) -> acd_pb2.Agent:
        if request.agent_id not in self.agents:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not logged in")
        return self.agents[request.agent_id]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def desk_site(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[str, EventIntake]]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('desk')}/crm.sqlite")
    await db.migrate()
    await seed(db)
    acd, port = test_tls.server(
        "acd", acd_pb2_grpc.add_AcdServicer_to_server, SeatAcd(), AcdService.CALLERS
    )
    await acd.start()
    channel = test_tls.channel("crm", "acd", port)
    cdrs = CdrStore(db)
    hub = DeskHub(db, cdrs)
    gateway, gateway_port = gateway_server(FakeCallControl())
    await gateway.start()
    to_gateway = test_tls.channel("crm", "gateway", gateway_port)
    app = web_app(
        db,
        AgentControl(channel),
        cdrs,
        hub,
        gateway=CallCommands(to_gateway),
        recorder=RecordingArchive(nowhere("crm", "recorder")),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{http_port}", EventIntake(hub, cdrs)
    await runner.cleanup()
    await channel.close()
    await to_gateway.close()
    await gateway.stop(None)
    await acd.stop(None)
    await db.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        try:
            launched = await pw.chromium.launch()
        except Error:
            executable = _chromium()
            if executable is None:
                pytest.skip("no Chromium: run `make setup` or `playwright install chromium`")
            launched = await pw.chromium.launch(executable_path=executable)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) per test, in Chinese as at the reference site."""
    context = await browser.new_context(locale="zh-CN")
    yield await context.new_page()
    await context.close()


async def test_wrong_password_shows_the_error(
    page: Page, desk_site: tuple[str, EventIntake]
) -> None:
    base, _ = desk_site
    await page.goto(base + "/")
    await page.fill("#username", "agent1")
    await page.fill("#password", "wrong")
    await page.click("#login-btn")
    error = page.locator("#login-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("用户名或密码错误")


async def test_agent_signs_in_goes_ready_and_sees_the_screen_pop(
    page: Page, desk_site: tuple[str, EventIntake]
) -> None:
    base, intake = desk_site
    await page.goto(base + "/")
    await page.fill("#username", "agent2")
    await page.fill("#password", "agent2-demo")
    await page.click("#login-btn")
    await expect(page.locator("#agent-ext")).to_have_text("8002")
    state = page.locator("#state")
    await expect(state).to_have_attribute("data-state", "not_ready")  # phone logged in for us
    await page.click("#ready-btn")
    await expect(state).to_have_attribute("data-state", "ready")
    await expect(state).to_contain_text("就绪")
    await page.select_option("#reason", "meeting")
    await page.click("#notready-btn")
    await expect(state).to_have_attribute("data-state", "not_ready")
    await expect(page.locator("#state-reason")).to_contain_text("会议")
    await expect(page.locator("#feed-status")).to_have_attribute("data-connected", "true")

    call_id = f"desk-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    await intake.handle(
        envelope(
            ev.AgentOffered(
                call_id=call_id,
                agent_id="agent2",
                extension="8002",
                queue="support",
                ani="sip:+8613800138000@trunk",
                dnis="10000",
            ),
            "agent2",
            "test",
            "test",
        )
    )
    panel = page.locator("#call-panel")
    await expect(panel).to_be_visible(timeout=1000)
    await expect(page.locator("#customer-name")).to_have_text("张伟", timeout=1000)
    assert time.monotonic() - started < 1.0
    await expect(page.locator("#caller-number")).to_have_text("sip:+8613800138000@trunk")
    await expect(page.locator("#queue-name")).to_have_text("support")
    await expect(page.locator("#customer-vip")).to_have_text("VIP 2")

    await intake.handle(
        envelope(
            ev.CallBridged(call_id=call_id, agent_id="agent2", queue="support"),
            call_id,
            "test",
            "test",
        )
    )
    await expect(panel).to_have_attribute("data-status", "connected")
    await expect(page.locator("#talk-timer")).to_have_text("00:01", timeout=3000)
    await intake.handle(
        envelope(
            ev.CallEnded(call_id=call_id, reason=ev.END_REASON_CALLER_HANGUP),
            call_id,
            "test",
            "test",
        )
    )
    await expect(panel).to_have_attribute("data-status", "ended")
    await expect(page.locator("#recent-calls")).to_contain_text("sip:+8613800138000@trunk")

    await page.reload()  # the session cookie survives; the seat is resumed, not re-logged in
    await expect(page.locator("#agent-ext")).to_have_text("8002")
    await expect(state).to_have_attribute("data-state", "not_ready")
