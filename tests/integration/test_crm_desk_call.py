"""The agent desk's in-call panel and wrap-up in a real headless Chromium, clicking through
hold (with the 15 s reminder and 30 s warning), mute, keypad, consult, conference, hang up,
the disposition form and the ACW timer, against the CRM web app in-process (SQLite), a real
gRPC ACD peer and the gateway `CallControl` peer of tests.crm_peers, both over mTLS.

The media behind each click is the gateway's and is proven there and in tests/e2e; here the
browser must drive the right REST call and show what came back. Time on hold and in wrap-up
is advanced with Playwright's clock, not waited for.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, Route, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

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
from hotline.v1.recorder_pb2 import HoldMark
from tests import tls as test_tls
from tests.crm_peers import FakeCallControl, FakeRecorder, LiveCall, gateway_server, recorder_server
from tests.e2e.test_agent_desktop import CHROMIUM_FLAGS
from tests.integration.test_crm_desktop import SeatAcd
from tests.unit.test_media_endpoint import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
#: how long an expectation may wait here (Playwright's default: 5 s): the browser, the CRM and
#: the peers share two cores with whatever else the machine runs. A bound on waiting, not a
#: timing figure.
EXPECT_TIMEOUT_MS = 15_000
PLAYWRIGHT_DEFAULT_TIMEOUT_MS = 5_000


class DirectoryAcd(SeatAcd):
    """The seat ACD plus the directory the transfer dialog lists."""

    async def ListAgents(
        self, request: acd_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.ListAgentsReply:
        return acd_pb2.ListAgentsReply(agents=list(self.agents.values()))

    async def ListQueues(
        self, request: acd_pb2.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> acd_pb2.ListQueuesReply:
        return acd_pb2.ListQueuesReply(queues=[acd_pb2.QueueStatus(queue="support")])


@dataclass
class Site:
    url: str
    intake: EventIntake
    acd: DirectoryAcd
    gateway: FakeCallControl
    recorder: FakeRecorder

    async def emit(self, payload: Any, key: str) -> None:
        await self.intake.handle(envelope(payload, key, "test", "test"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('deskcall')}/crm.sqlite")
    await db.migrate()
    await seed(db)
    fake_acd, fake_gateway = DirectoryAcd(), FakeCallControl()
    acd, acd_port = test_tls.server(
        "acd", acd_pb2_grpc.add_AcdServicer_to_server, fake_acd, AcdService.CALLERS
    )
    gateway, gateway_port = gateway_server(fake_gateway)
    fake_recorder = FakeRecorder()
    recorder, recorder_port = recorder_server(fake_recorder)
    await acd.start()
    await gateway.start()
    await recorder.start()
    to_acd = test_tls.channel("crm", "acd", acd_port)
    to_gateway = test_tls.channel("crm", "gateway", gateway_port)
    cdrs = CdrStore(db)
    hub = DeskHub(db, cdrs)
    app = web_app(
        db,
        AgentControl(to_acd),
        cdrs,
        hub,
        gateway=CallCommands(to_gateway),
        recorder=RecordingArchive(test_tls.channel("crm", "recorder", recorder_port)),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield Site(url, EventIntake(hub, cdrs), fake_acd, fake_gateway, fake_recorder)
    await runner.cleanup()
    await to_acd.close()
    await to_gateway.close()
    await acd.stop(None)
    await gateway.stop(None)
    await recorder.stop(None)
    await db.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(locale="zh-CN")
    new_page = await context.new_page()
    await new_page.clock.install()
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    try:
        yield new_page
    finally:
        expect.set_options(timeout=PLAYWRIGHT_DEFAULT_TIMEOUT_MS)
        await context.close()


def wav_tone(seconds: float) -> bytes:
    """A stereo 8 kHz 16-bit WAV of a 440 Hz tone, as the recorder stores calls."""
    samples = (np.sin(2 * np.pi * 440 * np.arange(int(8000 * seconds)) / 8000) * 8000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.repeat(samples, 2).tobytes())
    return out.getvalue()


async def sign_in(page: Page, site: Site, agent: str) -> None:
    await page.goto(site.url + "/")
    await page.fill("#username", agent)
    await page.fill("#password", f"{agent}-demo")
    await page.click("#login-btn")
    await expect(page.locator("#state")).to_have_attribute("data-state", "not_ready")
    await page.click("#ready-btn")
    await expect(page.locator("#state")).to_have_attribute("data-state", "ready")
    await expect(page.locator("#feed-status")).to_have_attribute("data-connected", "true")


async def answered_call(site: Site, agent: str, extension: str, ani: str) -> str:
    """A call offered to and bridged with `agent`, live at the gateway and the ACD."""
    call_id = f"desk-{uuid.uuid4().hex[:8]}"
    site.gateway.calls[call_id] = LiveCall()
    seat = site.acd.agents[agent]
    seat.state, seat.call_id = ev.AGENT_STATE_ON_CALL, call_id
    await site.emit(ev.CallOffered(call_id=call_id, ani=ani, dnis="10000"), call_id)
    await site.emit(
        ev.AgentOffered(
            call_id=call_id, agent_id=agent, extension=extension, queue="support", ani=ani
        ),
        agent,
    )
    await site.emit(ev.CallBridged(call_id=call_id, agent_id=agent, queue="support"), call_id)
    return call_id


async def test_hold_reminds_at_15_s_warns_at_30_s_and_resumes(page: Page, site: Site) -> None:
    await sign_in(page, site, "agent3")
    call_id = await answered_call(site, "agent3", "8003", "13800138000")
    panel = page.locator("#call-panel")
    await expect(panel).to_have_attribute("data-status", "connected")
    await expect(page.locator("#customer-name")).to_have_text("张伟")
    await page.click("#hold-btn")
    bar = page.locator("#hold-bar")
    await expect(bar).to_be_visible()
    assert site.gateway.calls[call_id].held
    await expect(page.locator("#hold-btn")).to_have_text("恢复通话")
    await expect(bar).to_have_attribute("data-level", "")
    await page.clock.fast_forward("00:16")
    await expect(bar).to_have_attribute("data-level", "remind")
    await expect(page.locator("#hold-alert")).to_contain_text("15 秒")
    await page.clock.fast_forward("00:15")
    await expect(bar).to_have_attribute("data-level", "warn")
    await expect(page.locator("#hold-alert")).to_contain_text("30 秒")
    await page.click("#hold-btn")
    await expect(bar).to_be_hidden()
    assert not site.gateway.calls[call_id].held

    # a hold the phone put on (re-INVITE) shows the same timer, from the feed
    await site.emit(ev.CallHeld(call_id=call_id, agent_id="agent3", by="phone"), call_id)
    await expect(bar).to_be_visible()
    await site.emit(ev.CallResumed(call_id=call_id, agent_id="agent3", held_ms=900), call_id)
    await expect(bar).to_be_hidden()

    await page.click("#mute-btn")
    await expect(page.locator("#mute-bar")).to_be_visible()
    assert site.gateway.calls[call_id].muted
    await page.click("#keypad-btn")
    await page.click('#keypad button[data-digit="5"]')
    await page.click('#keypad button[data-digit="#"]')
    await wait_for(lambda: site.gateway.calls[call_id].digits == "5#")


async def test_consult_conference_hang_up_and_wrap_up_with_a_callback(
    page: Page, site: Site
) -> None:
    await sign_in(page, site, "agent4")
    site.acd.agents["agent6"] = acd_pb2.Agent(
        agent_id="agent6", extension="8006", state=ev.AGENT_STATE_READY
    )
    # yesterday's call of this customer, taken by agent4 and recorded
    earlier = f"earlier-{uuid.uuid4().hex[:8]}"
    site.recorder.stored[f"rec-{earlier}"] = wav_tone(0.5)
    await site.emit(ev.CallOffered(call_id=earlier, ani="13912345678"), earlier)
    await site.emit(ev.CallBridged(call_id=earlier, agent_id="agent4"), earlier)
    await site.emit(ev.CallEnded(call_id=earlier, reason=ev.END_REASON_CALLER_HANGUP), earlier)
    await site.emit(
        ev.RecordingReady(
            call_id=earlier,
            recording_id=f"rec-{earlier}",
            agent_id="agent4",
            holds=[HoldMark(start_ms=12_400, end_ms=27_900, leg_id="leg-a", held_by="agent")],
        ),
        earlier,
    )
    call_id = await answered_call(site, "agent4", "8004", "13912345678")
    call = site.gateway.calls[call_id]
    await expect(page.locator("#call-panel")).to_have_attribute("data-status", "connected")
    # the screen pop shows the history; the recording plays in the browser
    player = page.locator(f'#history li[data-call-id="{earlier}"] audio')
    await expect(player).to_have_count(1)
    duration = await player.evaluate(
        "a => new Promise((ok, bad) => { a.onloadedmetadata = () => ok(a.duration);"
        " a.onerror = () => bad(new Error('cannot play')); a.load(); })"
    )
    assert abs(duration - 0.5) < 0.05
    # where that call was on hold, beside its player
    marks = page.locator(f'#history li[data-call-id="{earlier}"] .hold-marks li')
    await expect(marks).to_have_text(["保持 00:12–00:27"])

    # consult agent6 from the directory, then cancel: the caller is back
    await page.click("#transfer-btn")
    await page.click('#agent-list button[data-extension="8006"]')
    await expect(page.locator("#target-input")).to_have_value("8006")
    await page.check("#kind-consult")
    await page.click("#transfer-go")
    await expect(page.locator("#consult-bar")).to_be_visible()
    assert call.consult_leg and call.held
    await page.click("#consult-cancel")
    await expect(page.locator("#consult-bar")).to_be_hidden()
    assert not call.held and not call.consult_leg

    # conference an outside number in, and out again
    await page.click("#conference-btn")
    await page.select_option("#target-kind", "number")
    await page.fill("#target-input", "5551234")
    await page.click("#transfer-go")
    parties = page.locator("#parties li")
    await expect(parties).to_have_count(1)
    assert call.parties == 3
    await page.click("#parties button")
    await expect(parties).to_have_count(0)
    assert call.parties == 2

    # hang up: the call ends, the wrap-up form opens with the ACW timer
    await page.click("#hangup-btn")
    await wait_for(lambda: call_id not in site.gateway.calls)
    site.acd.agents["agent4"].state = ev.AGENT_STATE_WRAP_UP
    await site.emit(ev.CallEnded(call_id=call_id, reason=ev.END_REASON_AGENT_HANGUP), call_id)
    card = page.locator("#wrapup-card")
    await expect(card).to_be_visible()
    await expect(page.locator("#acw-timer")).to_contain_text("剩余")
    await page.select_option("#disposition-code", "complaint")
    await page.fill("#disposition-notes", "宽带报修")
    await page.check("#follow-up")
    await expect(page.locator("#follow-up-phone")).to_have_value("13912345678")
    await page.click("#disposition-submit")
    await expect(card).to_be_hidden()
    await expect(page.locator("#state")).to_have_attribute("data-state", "ready")
    await expect(page.locator("#callbacks li[data-callback-id]")).to_have_count(1)
    await page.click("#callbacks li[data-callback-id] button")  # called back: done
    await expect(page.locator("#callbacks li[data-callback-id]")).to_have_count(0)
    await expect(page.locator("#recent-calls")).to_contain_text("投诉")


async def test_the_acw_timer_ends_in_ready(page: Page, site: Site) -> None:
    await sign_in(page, site, "agent5")
    call_id = await answered_call(site, "agent5", "8005", "5551234")
    await expect(page.locator("#call-panel")).to_have_attribute("data-status", "connected")
    site.acd.agents["agent5"].state = ev.AGENT_STATE_WRAP_UP
    await site.emit(ev.CallEnded(call_id=call_id, reason=ev.END_REASON_CALLER_HANGUP), call_id)
    await site.emit(
        ev.AgentStateChanged(
            agent_id="agent5",
            state=ev.AGENT_STATE_WRAP_UP,
            previous=ev.AGENT_STATE_ON_CALL,
            call_id=call_id,
        ),
        "agent5",
    )
    await expect(page.locator("#wrapup-card")).to_be_visible()
    await expect(page.locator("#state")).to_have_attribute("data-state", "wrap_up")
    await expect(page.locator("#acw-timer")).to_have_text(re.compile(r"剩余 00:5\d"))
    await page.clock.fast_forward("00:30")
    await expect(page.locator("#acw-timer")).to_have_text(re.compile(r"剩余 00:[23]\d"))
    assert site.acd.agents["agent5"].state == ev.AGENT_STATE_WRAP_UP
    await page.clock.fast_forward("00:31")
    await expect(page.locator("#state")).to_have_attribute("data-state", "ready")
    assert site.acd.agents["agent5"].state == ev.AGENT_STATE_READY


async def test_click_to_dial_from_the_customer_card_and_the_locked_screen(
    page: Page, site: Site
) -> None:
    await sign_in(page, site, "agent7")
    await expect(page.locator("#dial-class")).to_contain_text("本地")
    await page.fill("#dial-number", "")
    for key in "5551234":
        await page.click(f'#dial-keypad button[data-digit="{key}"]')
    await page.click("#dial-btn")
    await expect(page.locator("#call-panel")).to_have_attribute("data-status", "connected")
    dialled = [r for n, r in site.gateway.requests if n == "DialOut"][-1]
    assert (dialled.number, dialled.endpoint, dialled.dial_class) == ("5551234", "8007", "local")
    await expect(page.locator("#customer-name")).to_have_text("未知来电")

    # locked, the desk shows nothing of the call; the password brings it back
    await page.click("#lock-btn")
    await expect(page.locator("#lock-view")).to_be_visible()
    await expect(page.locator("#desk-view")).to_be_hidden()
    assert await page.locator("#caller-number").text_content() == ""
    await page.fill("#lock-password", "not-it")
    await page.click("#unlock-btn")
    # what kind of problem in the desk's language, the server's reason after it
    await expect(page.locator("#lock-error")).to_contain_text("无权操作: wrong password")
    await page.reload()  # a reload does not open a locked desk
    await expect(page.locator("#lock-view")).to_be_visible()
    await page.fill("#lock-password", "agent7-demo")
    await page.click("#unlock-btn")
    await expect(page.locator("#desk-view")).to_be_visible()


#: draws `text` with the font an element uses and returns a fingerprint of the ink (the dark
#: pixels' positions), so two glyphs compare equal only when they look the same.
_INK = """([selector, text]) => {
  const font = getComputedStyle(document.querySelector(selector)).font;
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 64;
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, 64, 64);
  g.fillStyle = "#000"; g.font = font.replace(/\\d+px/, "40px"); g.textBaseline = "top";
  g.fillText(text, 4, 4);
  const data = g.getImageData(0, 0, 64, 64).data;
  const ink = [];
  for (let i = 0; i < data.length; i += 4) if (data[i] < 128) ink.push(i / 4);
  return ink.join(",");
}"""


async def test_the_zh_cn_desk_shows_chinese_glyphs_not_boxes(
    page: Page, site: Site, tmp_path: Any
) -> None:
    await sign_in(page, site, "agent9")
    await expect(page.locator("#state")).to_have_text("就绪")
    await page.screenshot(path=str(tmp_path / "desk-zh-CN.png"), full_page=True)
    ready, wrap, notdef = [
        await page.evaluate(_INK, ["#state", text]) for text in ("就", "绪", "\ue000")
    ]
    assert ready and wrap, "CJK text drew no ink at all"
    # without a CJK font every character is the same missing-glyph box
    assert ready != wrap, "two different characters render alike: boxes, not glyphs"
    assert notdef not in (ready, wrap), "CJK characters render as the missing-glyph box"
    # and the English desk is the same page in the other catalogue
    async with page.expect_response("**/api/me/language") as saved:  # before the reload below
        await page.select_option("#lang-select", "en")
    assert (await saved.value).ok
    await expect(page.locator("#state")).to_have_text("Ready")
    await expect(page.locator("#ready-btn")).to_have_text("Ready")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await page.reload()  # the choice is the user's setting now
    await expect(page.locator("#state")).to_have_text("Ready")
    async with page.expect_response("**/api/me/language") as saved:
        await page.select_option("#lang-select", "zh-CN")
    assert (await saved.value).ok
    await expect(page.locator("#notready-btn")).to_have_text("示忙")


async def test_a_language_chosen_just_before_the_page_goes_is_kept(page: Page, site: Site) -> None:
    await sign_in(page, site, "agent12")
    await expect(page.locator("#state")).to_have_text("就绪")  # the browser's language
    saves: list[str] = []
    delivered = asyncio.Event()

    async def slow_save(route: Route) -> None:  # a slow network: the save outlives the page
        saves.append(route.request.method)
        await asyncio.sleep(1)
        try:
            await route.continue_()
        except PlaywrightError as exc:  # the browser dropped it with the page
            saves.append(f"dropped: {exc.message}")
        delivered.set()

    await page.route("**/api/me/language", slow_save)
    await page.select_option("#lang-select", "en")
    await page.reload()  # at once: the save is still on its way
    await asyncio.wait_for(delivered.wait(), 15)
    await page.unroute("**/api/me/language")
    assert saves == ["POST"]
    await page.reload()
    await expect(page.locator("#state")).to_have_text("Ready")
    await expect(page.locator("html")).to_have_attribute("lang", "en")


async def test_a_call_transferred_to_the_agent_pops_with_its_customer(
    page: Page, site: Site
) -> None:
    await sign_in(page, site, "agent8")
    call_id = f"xfer-{uuid.uuid4().hex[:8]}"
    await site.emit(ev.CallOffered(call_id=call_id, ani="13800138000", dnis="10000"), call_id)
    await site.emit(ev.CallBridged(call_id=call_id, agent_id="agent2", queue="support"), call_id)
    await site.emit(
        ev.CallTransferred(
            call_id=call_id,
            from_agent_id="agent2",
            to_agent_id="agent8",
            kind="blind",
            target_kind="extension",
            target="8008",
        ),
        call_id,
    )
    panel = page.locator("#call-panel")
    await expect(panel).to_have_attribute("data-status", "connected")
    await expect(panel).to_have_attribute("data-call-id", call_id)
    await expect(page.locator("#customer-name")).to_have_text("张伟")
    await expect(page.locator("#call-controls")).to_be_visible()


async def test_a_customer_looked_up_shows_history_and_is_dialled_from_the_card(
    page: Page, site: Site
) -> None:
    await sign_in(page, site, "agent10")
    earlier = f"earlier-{uuid.uuid4().hex[:8]}"
    await site.emit(ev.CallOffered(call_id=earlier, ani="+86 137 0000 1111"), earlier)
    await site.emit(ev.CallBridged(call_id=earlier, agent_id="agent11"), earlier)
    await site.emit(ev.CallEnded(call_id=earlier, reason=ev.END_REASON_CALLER_HANGUP), earlier)
    await page.fill("#lookup-phone", "137-0000-1111")
    await page.click("#lookup-btn")
    await expect(page.locator("#lookup-name")).to_have_text("刘芳")
    await expect(page.locator("#lookup-vip")).to_have_text("VIP 3")
    # a colleague's call is in the history too
    await expect(page.locator(f'#lookup-history li[data-call-id="{earlier}"]')).to_contain_text(
        "agent11"
    )
    await page.click("#lookup-dial-btn")
    await expect(page.locator("#call-panel")).to_have_attribute("data-status", "connected")
    dialled = [r for n, r in site.gateway.requests if n == "DialOut"][-1]
    assert (dialled.number, dialled.customer_id, dialled.endpoint) == ("13700001111", "5", "8010")
    await expect(page.locator("#customer-name")).to_have_text("刘芳")
    await page.fill("#lookup-phone", "999")
    await page.click("#lookup-btn")
    await expect(page.locator("#lookup-error")).to_contain_text("未找到")
