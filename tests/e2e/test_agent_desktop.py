"""The agent desktop in real headless Chromium: log in, go Ready, and see the screen pop
(caller number, queue, customer card) when SIPp calls — within a second of the offer."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import DTMF_PCAP, Platform, register_phone

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_agent_sees_screen_pop(platform: Platform, sipp, agents, tmp_path) -> None:  # noqa: ANN001
    phone = sipp("phone_uas.xml", 16211, media_port=16212)
    register_phone(sipp, "8007", 16210, 16211)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_context(bypass_csp=True).new_page()  # the desk has a strict CSP
            page.goto(platform.http + "/")
            page.fill("#password", "wrong")
            page.fill("#username", "agent7")
            page.click("#login-btn")
            page.wait_for_selector("#login-error:not(:empty)")
            page.fill("#password", "agent7-demo")
            page.click("#login-btn")
            page.wait_for_selector("#desk-view:visible")
            page.wait_for_function("document.querySelector('#state').dataset.state === 'not_ready'")
            page.click("#ready-btn")
            page.wait_for_function("document.querySelector('#state').dataset.state === 'ready'")

            caller = sipp(
                "caller.xml",
                16220,
                media_port=16222,
                keys={
                    "service": "10000",
                    "caller": "5551234",
                    "dtmf_pcap": DTMF_PCAP.format(1),
                    "talk_ms": "4000",
                },
                extra=["-s", "10000"],
            )
            page.wait_for_selector("#call-panel:visible", timeout=30000)
            assert page.text_content("#caller-number") == "5551234"
            assert page.text_content("#queue-name") == "sales"
            assert "Demo Caller" in page.text_content("#customer-name")
            lag = page.evaluate(
                "Number(document.querySelector('#call-panel').dataset.poppedAt)"
                " - Number(document.querySelector('#call-panel').dataset.offeredAt)"
            )
            assert 0 <= lag < 1000, f"screen pop {lag} ms after the offer"
            page.screenshot(path=str(tmp_path / "screen-pop.png"))
            page.wait_for_function(
                "document.querySelector('#call-panel').dataset.status === 'connected'"
            )
            assert caller.wait(60) == 0, caller.explain()
            assert phone.wait(30) == 0, phone.explain()
            page.wait_for_function(
                "['wrap_up', 'ready'].includes(document.querySelector('#state').dataset.state)"
            )
            agents("agent7")  # registers the session for logout at teardown
        finally:
            browser.close()
