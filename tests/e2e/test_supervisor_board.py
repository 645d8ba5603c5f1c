"""The supervisor board in real headless Chromium on the real platform: a snapshot on load, then
live as agents change state and a SIPp caller queues and is answered by a SIPp phone; the
supervisor sets an agent Not Ready from the board, listens in from a desk phone (SIPp), switches
to whisper, leaves, and force-releases the call; an agent's API session is refused the
supervisor's actions; every action lands in the CRM's audit log. (Who hears whom while
monitoring is proven by tone in the gateway's own tests.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.e2e.conftest import DTMF_PCAP, Api, Platform, register_phone, wait_for
from tests.e2e.test_agent_desktop import CHROMIUM_FLAGS

pytestmark = pytest.mark.e2e


def audit(platform: Platform, action: str, target: str) -> list[tuple[str, str]]:
    """(actor, detail) of the CRM's audit entries for `action` on `target`."""
    with sqlite3.connect(platform.var_dir / "crm.sqlite") as db:
        return db.execute(
            "SELECT actor, detail FROM audit_log WHERE action = ? AND target = ? ORDER BY id",
            (action, target),
        ).fetchall()


def row(agent_id: str) -> str:
    return f'#supervisor-board tr[data-agent="{agent_id}"]'


def cell(page: Page, selector: str, field: str) -> str:
    return page.text_content(f'{selector} [data-field="{field}"]') or ""


def sign_in_supervisor(page: Page, platform: Platform) -> None:
    page.goto(platform.http + "/")
    page.fill("#username", "supervisor")
    page.fill("#password", "supervisor-demo")
    page.click("#login-btn")
    page.wait_for_selector("#supervisor-board #board-status[data-loaded='true']", timeout=20000)


def test_board_snapshot_then_live_and_supervisor_actions(
    platform: Platform,
    sipp,  # noqa: ANN001
    agents,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    # before the supervisor opens the board: agent15 and agent16 logged in, Not Ready
    agent15, agent16 = agents("agent15"), agents("agent16")
    for api in (agent15, agent16):
        status, body = api.call("POST", "/api/agent/login", {})
        assert status == 200, body
    phone = sipp("phone_uas.xml", 16611, media_port=16612)
    register_phone(sipp, "8015", 16610, 16611)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_context(bypass_csp=True).new_page()
            sign_in_supervisor(page, platform)
            # the snapshot: both agents as the ACD has them, the queues with their KPIs
            page.wait_for_selector(f'{row("agent15")}[data-state="not_ready"]')
            page.wait_for_selector(f'{row("agent16")}[data-state="not_ready"]')
            assert cell(page, row("agent15"), "call") == "—"
            page.wait_for_selector('#supervisor-board tr[data-queue="support"]')
            assert cell(page, '#supervisor-board tr[data-queue="support"]', "waiting") == "0"
            page.screenshot(path=str(tmp_path / "board-snapshot.png"))

            # live: agent16 goes Not Ready for a meal from their own desk (API)
            status, _ = agent16.call(
                "POST", "/api/agent/state", {"state": "not_ready", "reason": "meal"}
            )
            assert status == 200
            page.wait_for_function(
                f"document.querySelector('{row('agent16')}').textContent.includes('用餐 Meal')"
            )

            # live: a caller queues in support while nobody is Ready
            support = '#supervisor-board tr[data-queue="support"]'
            caller = sipp(
                "caller_until_bye.xml",
                16620,
                media_port=16622,
                keys={"service": "10000", "caller": "5550115", "dtmf_pcap": DTMF_PCAP.format(2)},
                extra=["-s", "10000"],
            )
            page.wait_for_function(
                f"document.querySelector('{support} [data-field=\"waiting\"]').textContent === '1'",
                timeout=30000,
            )
            page.wait_for_function(  # the longest wait runs
                f"document.querySelector('{support} [data-field=\"longest\"]').textContent"
                " >= '00:02'",
                timeout=10000,
            )
            page.screenshot(path=str(tmp_path / "board-waiting.png"))

            # agent15 goes Ready: the call is answered; the board shows the call and its queue
            status, _ = agent15.call("POST", "/api/agent/state", {"state": "ready"})
            assert status == 200
            page.wait_for_selector(f'{row("agent15")}[data-state="on_call"]', timeout=30000)
            assert cell(page, row("agent15"), "queue") == "support"
            assert cell(page, row("agent15"), "call") != "—"
            page.wait_for_function(
                f"document.querySelector('{support} [data-field=\"waiting\"]').textContent === '0'"
            )
            page.wait_for_function(  # the ACD's rolling figure, fetched again after the answer
                f"document.querySelector('{support} [data-field=\"service_level\"]')"
                ".textContent.endsWith('%')"
            )

            # the supervisor sets agent16 Not Ready (meeting) from the board
            picker = f'{row("agent16")} select[data-role="reason"]'
            page.select_option(picker, "meeting")
            # every feed message redraws the rows (here: agent14 logs in); the picked reason
            # survives it instead of falling back to the first one under the supervisor's hand
            agent14 = agents("agent14")
            status, body = agent14.call("POST", "/api/agent/login", {})
            assert status == 200, body
            page.wait_for_selector(f'{row("agent14")}[data-state="not_ready"]', timeout=30000)
            assert page.eval_on_selector(picker, "s => s.value") == "meeting"
            page.click(f'{row("agent16")} button[data-action="not_ready"]')
            # (the row's reason picker always lists "会议 Meeting": wait on the ACD's answer)
            status, seat = wait_for(
                lambda: (
                    (r := agent16.call("GET", "/api/agent"))[1].get("reason") == "meeting" and r
                ),
                timeout_s=10,
                what="agent16 Not Ready (meeting) at the ACD",
            )
            assert (status, seat["state"], seat["reason"]) == (200, "not_ready", "meeting")
            # (the feed can show the change before the request has committed its audit row)
            wait_for(
                lambda: audit(platform, "supervision.agent.state", "agent16"),
                timeout_s=5,
                what="the state change audited",
            )
            assert audit(platform, "supervision.agent.state", "agent16") == [
                ("supervisor", "not_ready (meeting)")
            ]
            # logging out an agent on a call is refused, said on the board, and audited
            page.click(f'{row("agent15")} button[data-action="logout"]')
            page.wait_for_selector("#board-note.error")
            assert "on_call" in (page.text_content("#board-note") or "")
            refused = wait_for(
                lambda: audit(platform, "supervision.agent.logout.refused", "agent15"),
                timeout_s=5,
                what="the refused log-out audited",
            )
            assert refused[0][0] == "supervisor"
            page.screenshot(path=str(tmp_path / "board-actions.png"))

            # an agent's session may not use the supervisor's actions
            status, body = agent16.call(
                "POST", "/api/supervision/agents/agent15/state", {"state": "ready"}
            )
            assert status == 403 and "role agent may not use" in body["error"]
            call_id = page.get_attribute(f'{row("agent15")} [data-field="call"]', "data-call")
            assert call_id
            status, body = agent16.call("POST", f"/api/supervision/calls/{call_id}/release")
            assert status == 403

            # the supervisor listens in from the desk phone 8090 (a hot desk the admin approved),
            # switches to whisper, and leaves again: the board drives the gateway's Monitor
            admin = Api(platform.http)
            admin.login("admin", "admin-demo")
            status, body = admin.call("POST", "/api/hotdesks", {"extension": "8090"})
            assert status in (201, 409), body  # 409: approved by an earlier run
            desk_phone = sipp("phone_uas.xml", 16631, media_port=16632)
            register_phone(sipp, "8090", 16630, 16631)
            page.fill("#board-extension", "8090")
            page.click(f'{row("agent15")} button[data-action="listen"]')
            page.wait_for_selector(
                f'{row("agent15")} button[data-action="listen"].active', timeout=30000
            )
            # the gateway's MonitorStarted marks the call on the board, for every watcher
            page.wait_for_selector(f'{row("agent15")} [data-mark="monitored"]', timeout=10000)
            assert "supervisor" in (page.text_content(f"{row('agent15')} [data-mark]") or "")
            page.click(f'{row("agent15")} button[data-action="whisper"]')
            page.wait_for_selector(f'{row("agent15")} button[data-action="whisper"].active')
            page.click(f'{row("agent15")} button[data-action="stop"]')
            page.wait_for_selector(f'{row("agent15")} button[data-action="listen"]:not(.active)')
            page.wait_for_selector(f'{row("agent15")} [data-mark="monitored"]', state="detached")
            assert desk_phone.wait(30) == 0, desk_phone.explain()  # BYE when the supervisor left
            wait_for(
                lambda: audit(platform, "supervision.monitor.stop", call_id),
                timeout_s=5,
                what="the stop audited",
            )
            assert audit(platform, "supervision.monitor", call_id) == [
                ("supervisor", "listen from extension 8090"),
                ("supervisor", "whisper from extension 8090"),
            ]
            assert len(audit(platform, "supervision.monitor.stop", call_id)) == 1
            page.screenshot(path=str(tmp_path / "board-monitor.png"))

            # the caller hangs up … here: the supervisor's force release ends the call
            page.click(f'{row("agent15")} button[data-action="release"]')
            page.click(f'{row("agent15")} button[data-action="release"][data-armed="true"]')
            wait_for(
                lambda: (
                    audit(platform, "supervision.release", call_id)
                    or audit(platform, "supervision.release.refused", call_id)
                ),
                timeout_s=15,
                what="the force release audited",
            )
            assert audit(platform, "supervision.release", call_id) == [("supervisor", "")], audit(
                platform, "supervision.release.refused", call_id
            )
            assert caller.wait(30) == 0, caller.explain()  # BYE from the gateway
            assert phone.wait(30) == 0, phone.explain()
            page.wait_for_selector(
                f'{row("agent15")}:is([data-state="wrap_up"], [data-state="ready"])',
                timeout=20000,
            )
        finally:
            browser.close()
