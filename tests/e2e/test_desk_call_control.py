"""The agent desk drives real calls: in headless Chromium an agent holds, resumes, hangs up,
conferences a colleague in, transfers the caller and files the wrap-up, on the real platform
(broker and the five services) with PJSUA2 phones that really send and record audio.

Each party sends a tone of its own; what the caller recorded proves, window by window, what
each click did to the media: on hold the caller hears music and not the agent, in conference
both the agent and the colleague (never itself), after a transfer the new party and no longer
the agent. The gateway's own suites prove the media paths in depth; these prove the desk
drives them, and that the CDR keeps hold time, the conference party, the transfer and the
disposition.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
import urllib.request
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.e2e.conftest import Platform
from tests.e2e.sip import conftest as sip_conftest
from tests.e2e.sip.conftest import Peer, Spawn, pjsua_argv
from tests.e2e.sip.signal import read_wav, tone_share
from tests.e2e.test_agent_desktop import CHROMIUM_FLAGS

pytestmark = pytest.mark.e2e

peers = sip_conftest.peers  # PJSUA2 processes, killed at the end of each test

CALLER_HZ, AGENT_HZ, COLLEAGUE_HZ, TARGET_HZ = 1100.0, 700.0, 900.0, 1300.0


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        await launched.close()


BLOCK_S = 0.25


class Heard:
    """What a phone recorded, cut into 250 ms blocks, each labelled with the tones that carry
    a fair share of its power. The recording's clock is the phone's own (it records only
    while media flows), so the checks look for stretches and their lengths, not wall times."""

    def __init__(self, path: Path, tones: tuple[float, ...]) -> None:
        samples, rate = read_wav(path)
        step = int(rate * BLOCK_S)
        self.blocks: list[tuple[frozenset[float], bool]] = []
        for i in range(samples.size // step):
            block = samples[i * step : (i + 1) * step]
            loud = bool(np.sqrt((block**2).mean()) > 300)
            present = frozenset(hz for hz in tones if tone_share(block, rate, hz) > 0.15)
            self.blocks.append((present if loud else frozenset(), loud))

    def runs(self) -> list[tuple[frozenset[float], bool, float]]:
        """Consecutive blocks with the same tones: (tones, loud, seconds)."""
        out: list[tuple[frozenset[float], bool, float]] = []
        for tones, loud in self.blocks:
            if out and out[-1][0] == tones and out[-1][1] == loud:
                out[-1] = (tones, loud, out[-1][2] + BLOCK_S)
            else:
                out.append((tones, loud, BLOCK_S))
        return out

    def stretch(self, tones: set[float], seconds: float) -> int:
        """Index of the first run of exactly `tones` lasting at least `seconds`."""
        for i, (present, _loud, length) in enumerate(self.runs()):
            if present == frozenset(tones) and length >= seconds:
                return i
        raise AssertionError(f"no {seconds} s of {sorted(tones)} Hz in {self.describe()}")

    def describe(self) -> str:
        return ", ".join(
            f"{'+'.join(str(int(h)) for h in sorted(t)) or ('other' if loud else 'quiet')}"
            f" {length:.2f}s"
            for t, loud, length in self.runs()
        )


async def phone(
    spawn: Spawn, platform: Platform, tmp: Path, ext: str, port: int, hz: float, **kw: object
) -> Peer:
    peer = await spawn(
        f"phone-{ext}",
        pjsua_argv(
            server=f"127.0.0.1:{platform.sip_port}",
            local_port=port,
            rtp_port=port + 12000,
            register=ext,
            password=f"{ext}-demo",
            tone=int(hz),
            record=tmp / f"{ext}.wav",
            max_seconds=120,
            **kw,
        ),
    )
    await peer.expect("registered")
    return peer


async def caller(spawn: Spawn, platform: Platform, tmp: Path) -> Peer:
    """A PJSUA2 caller on the human service number choosing 1 (sales) in the menu."""
    server = f"127.0.0.1:{platform.sip_port}"
    peer = await spawn(
        "caller",
        pjsua_argv(
            server=server,
            local_port=26390,
            rtp_port=38390,
            call=f"sip:10000@{server}",
            tone=int(CALLER_HZ),
            record=tmp / "caller.wav",
            info_dtmf="1",
            info_after=1.0,
            max_seconds=120,
        ),
    )
    await peer.expect("media", timeout_s=20)
    return peer


async def desk(browser: Browser, platform: Platform, agent: str) -> Page:
    """The agent's desk in Chinese, signed in and Ready."""
    page = await (await browser.new_context(locale="zh-CN")).new_page()
    await page.goto(platform.http + "/")
    await page.fill("#username", agent)
    await page.fill("#password", f"{agent}-demo")
    await page.click("#login-btn")
    state = page.locator("#state")
    await expect(state).to_have_attribute("data-state", "not_ready", timeout=15_000)
    await page.click("#ready-btn")
    await expect(state).to_have_attribute("data-state", "ready")
    await expect(page.locator("#feed-status")).to_have_attribute("data-connected", "true")
    return page


async def sign_out(page: Page) -> None:
    """Log the agent out of the ACD (as the desk's sign-out does), so no later test's call
    rings this seat."""
    for _ in range(40):
        state = await page.locator("#state").get_attribute("data-state")
        if state in ("ready", "not_ready", "logged_out"):
            break
        await asyncio.sleep(0.5)
    await page.click("#logout-btn")
    await expect(page.locator("#login-view")).to_be_visible()


def as_supervisor(platform: Platform, path: str) -> bytes:
    """GET `path` of the CRM as the supervisor (who may read every CDR and play every
    recording)."""
    req = urllib.request.Request(
        platform.http + "/api/login",
        data=json.dumps({"username": "supervisor", "password": "supervisor-demo"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        token = json.loads(resp.read())["token"]
    req = urllib.request.Request(
        f"{platform.http}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return bytes(resp.read())


def cdr(platform: Platform, call_id: str) -> dict:
    return dict(json.loads(as_supervisor(platform, f"/api/cdrs/{call_id}")))


async def stored_recording(platform: Platform, call_id: str) -> tuple[dict, np.ndarray]:
    """The call's one complete recording as the CDR lists it (once the recorder announced
    it), and its audio (stereo: caller, then what the caller heard)."""
    recordings: list[dict] = []
    for _ in range(60):  # uploaded after the call, announced, folded by the CRM: 30 s at most
        recordings = cdr(platform, call_id)["recordings"]
        if recordings and recordings[-1]["status"] == "complete":
            break
        await asyncio.sleep(0.5)
    assert len(recordings) == 1 and recordings[0]["status"] == "complete", recordings
    raw = as_supervisor(platform, f"/api/cdrs/{call_id}/recordings/{recordings[0]['recording_id']}")
    with wave.open(io.BytesIO(raw), "rb") as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return recordings[0], pcm.astype(np.float64)


async def connected(page: Page) -> str:
    panel = page.locator("#call-panel")
    await expect(panel).to_have_attribute("data-status", "connected", timeout=45_000)
    call_id = await panel.get_attribute("data-call-id")
    assert call_id
    return call_id


async def test_desk_hold_resume_hang_up_and_wrap_up(
    platform: Platform, peers: Spawn, browser: Browser, tmp_path: Path
) -> None:
    agent_phone = await phone(peers, platform, tmp_path, "8003", 26303, AGENT_HZ)
    page = await desk(browser, platform, "agent3")
    try:
        talker = await caller(peers, platform, tmp_path)
        call_id = await connected(page)
        await agent_phone.expect("confirmed")
        await asyncio.sleep(2.5)
        held_at = time.monotonic()
        await page.click("#hold-btn")
        await expect(page.locator("#hold-bar")).to_be_visible()
        await asyncio.sleep(4.0)
        resumed_at = time.monotonic()
        await page.click("#hold-btn")
        await expect(page.locator("#hold-bar")).to_be_hidden()
        await asyncio.sleep(2.5)
        await page.click("#hangup-btn")
        await talker.expect("disconnected", timeout_s=10)

        # the wrap-up form opens; filing it records the disposition
        await expect(page.locator("#wrapup-card")).to_be_visible(timeout=10_000)
        await page.select_option("#disposition-code", "resolved")
        await page.fill("#disposition-notes", "已解决:保持后恢复")
        await page.click("#disposition-submit")
        await expect(page.locator("#wrapup-card")).to_be_hidden()

        assert await talker.wait() == 0, talker.tail()
        # the caller hears the agent, then on hold music and not the agent for as long as the
        # hold lasted, then the agent again
        heard = Heard(tmp_path / "caller.wav", (AGENT_HZ, CALLER_HZ))
        runs = heard.runs()
        first = heard.stretch({AGENT_HZ}, 1.5)
        rest = runs[first + 1 :]
        gap = list(itertools.takewhile(lambda run: AGENT_HZ not in run[0], rest))
        on_hold = sum(length for _, _, length in gap)
        assert gap and all(loud for _, loud, _ in gap), f"no music on hold: {heard.describe()}"
        assert abs(on_hold - (resumed_at - held_at)) < 1.2, (on_hold, heard.describe())
        assert not any(CALLER_HZ in r[0] for r in runs), f"caller hears itself: {heard.describe()}"
        assert len(rest) > len(gap) and AGENT_HZ in rest[len(gap)][0], heard.describe()

        record = cdr(platform, call_id)
        assert record["hold_count"] == 1
        assert 3000 <= record["hold_ms"] <= 6000, record["hold_ms"]
        assert record["ended_at"] and record["talk_ms"] > 0
        assert record["disposition"]["code"] == "resolved"

        # the recording marks the hold where the caller heard the music: inside the mark the
        # caller's side of the recording (what the caller heard) is music, not the agent;
        # around it, the agent's tone
        stored, pcm = await stored_recording(platform, call_id)
        [mark] = stored["holds"]
        assert mark["held_by"] == "agent", mark
        start, end = mark["start_ms"] * 8, mark["end_ms"] * 8  # samples at 8 kHz
        assert abs((end - start) / 8000 - on_hold) < 1.0, (mark, heard.describe())
        heard_by_caller = pcm[:, 1]
        margin = 2400  # 0.3 s: the switch between talk and music
        held = heard_by_caller[start + margin : end - margin]
        assert held.size >= 2 * 8000, mark
        assert np.sqrt((held**2).mean()) > 300, "the marked span is not the hold music"
        assert tone_share(held, 8000, AGENT_HZ) < 0.05, "the agent is heard inside the mark"
        before = heard_by_caller[max(0, start - margin - 8000) : start - margin]
        after = heard_by_caller[end + margin : end + margin + 8000]
        for talk in (before, after):
            assert talk.size == 8000, (mark, len(heard_by_caller))
            assert tone_share(talk, 8000, AGENT_HZ) > 0.5, "the agent is not heard around it"
        assert tone_share(pcm[start + margin : end - margin, 0], 8000, CALLER_HZ) > 0.5
    finally:
        await sign_out(page)


async def test_desk_conference_then_blind_transfer(
    platform: Platform, peers: Spawn, browser: Browser, tmp_path: Path
) -> None:
    agent_phone = await phone(peers, platform, tmp_path, "8003", 26313, AGENT_HZ)
    colleague = await phone(peers, platform, tmp_path, "8004", 26314, COLLEAGUE_HZ)
    target = await phone(peers, platform, tmp_path, "8005", 26315, TARGET_HZ, hangup_after=4.0)
    page = await desk(browser, platform, "agent3")
    try:
        talker = await caller(peers, platform, tmp_path)
        call_id = await connected(page)
        await agent_phone.expect("confirmed")
        await asyncio.sleep(1.0)

        # conference the colleague in, from the dialog, by extension
        await page.click("#conference-btn")
        await page.select_option("#target-kind", "extension")
        await page.fill("#target-input", "8004")
        await page.click("#transfer-go")
        parties = page.locator("#parties li")
        await expect(parties).to_have_count(1, timeout=15_000)
        await colleague.expect("confirmed")
        joined_at = time.monotonic()
        await asyncio.sleep(3.0)
        left_at = time.monotonic()
        await page.click("#parties button")
        await expect(parties).to_have_count(0)
        await colleague.expect("disconnected", timeout_s=10)

        # then hand the caller over to 8005, blind
        await asyncio.sleep(1.0)
        await page.click("#transfer-btn")
        await page.select_option("#target-kind", "extension")
        await page.fill("#target-input", "8005")
        await page.check("#kind-blind")
        await page.click("#transfer-go")
        await target.expect("confirmed", timeout_s=15)
        await agent_phone.expect("disconnected", timeout_s=10)
        await expect(page.locator("#wrapup-card")).to_be_visible(timeout=10_000)
        await talker.expect("disconnected", timeout_s=15)  # 8005 hangs up after 4 s
        await page.select_option("#disposition-code", "transferred")
        await page.click("#disposition-submit")
        await expect(page.locator("#wrapup-card")).to_be_hidden()
        assert await talker.wait() == 0, talker.tail()

        # in conference the caller hears the agent and the colleague together (never itself)
        # for about as long as the colleague was in; at the end the transfer target alone
        heard = Heard(tmp_path / "caller.wav", (AGENT_HZ, COLLEAGUE_HZ, TARGET_HZ, CALLER_HZ))
        runs = heard.runs()
        both = heard.stretch({AGENT_HZ, COLLEAGUE_HZ}, 1.5)
        assert abs(runs[both][2] - (left_at - joined_at)) < 1.2, heard.describe()
        assert not any(CALLER_HZ in r[0] for r in runs), f"caller hears itself: {heard.describe()}"
        after = heard.stretch({TARGET_HZ}, 2.0)
        assert after > both, heard.describe()
        assert not any(AGENT_HZ in r[0] for r in runs[after:]), heard.describe()

        record = cdr(platform, call_id)
        assert [p["party"] for p in record["conference"]] == ["8004"]
        assert record["conference"][0]["left_at"]
        assert [(t["kind"], t["target_kind"], t["target"]) for t in record["transfers"]] == [
            ("blind", "extension", "8005")
        ]
        assert record["disposition"]["code"] == "transferred"
    finally:
        await sign_out(page)


async def test_desk_consult_then_complete(
    platform: Platform, peers: Spawn, browser: Browser, tmp_path: Path
) -> None:
    agent_phone = await phone(peers, platform, tmp_path, "8003", 26323, AGENT_HZ)
    colleague = await phone(
        peers, platform, tmp_path, "8004", 26324, COLLEAGUE_HZ, hangup_after=6.0
    )
    page = await desk(browser, platform, "agent3")
    try:
        talker = await caller(peers, platform, tmp_path)
        call_id = await connected(page)
        await agent_phone.expect("confirmed")
        await asyncio.sleep(1.5)

        # consult the colleague: the caller waits on hold music while agent and colleague talk
        await page.click("#transfer-btn")
        await page.select_option("#target-kind", "extension")
        await page.fill("#target-input", "8004")
        await page.check("#kind-consult")
        await page.click("#transfer-go")
        await expect(page.locator("#consult-bar")).to_be_visible(timeout=15_000)
        await colleague.expect("confirmed")
        consult_started = time.monotonic()
        await asyncio.sleep(3.0)
        await page.click("#consult-complete")
        completed = time.monotonic()
        await agent_phone.expect("disconnected", timeout_s=10)
        await expect(page.locator("#wrapup-card")).to_be_visible(timeout=10_000)
        await talker.expect("disconnected", timeout_s=15)  # the colleague hangs up after 6 s
        await page.select_option("#disposition-code", "transferred")
        await page.click("#disposition-submit")
        await expect(page.locator("#wrapup-card")).to_be_hidden()
        assert await talker.wait() == 0, talker.tail()

        heard = Heard(tmp_path / "caller.wav", (AGENT_HZ, COLLEAGUE_HZ, CALLER_HZ))
        runs = heard.runs()
        first = heard.stretch({AGENT_HZ}, 1.0)
        rest = runs[first + 1 :]
        # on hold during the consult: neither the agent nor the colleague, but not silence
        gap = list(itertools.takewhile(lambda run: COLLEAGUE_HZ not in run[0], rest))
        assert all(AGENT_HZ not in r[0] and r[1] for r in gap), heard.describe()
        assert abs(sum(r[2] for r in gap) - (completed - consult_started)) < 1.5, heard.describe()
        # then the colleague, and never the agent again
        after = heard.stretch({COLLEAGUE_HZ}, 2.0)
        assert after > first and not any(AGENT_HZ in r[0] for r in runs[after:]), heard.describe()
        assert not any(CALLER_HZ in r[0] for r in runs), f"caller hears itself: {heard.describe()}"
        # the colleague heard the agent during the consult (the agent talked to them)
        assert await colleague.wait() == 0, colleague.tail()
        told = Heard(tmp_path / "8004.wav", (AGENT_HZ, CALLER_HZ))
        told.stretch({AGENT_HZ}, 1.5)

        record = cdr(platform, call_id)
        assert [(t["kind"], t["target"]) for t in record["transfers"]] == [("attended", "8004")]
    finally:
        await sign_out(page)


async def test_desk_click_to_dial_rings_the_agent_then_the_number(
    platform: Platform, peers: Spawn, browser: Browser, tmp_path: Path
) -> None:
    agent_phone = await phone(peers, platform, tmp_path, "8003", 26333, AGENT_HZ)
    customer = await phone(peers, platform, tmp_path, "8006", 26336, TARGET_HZ)
    page = await desk(browser, platform, "agent3")
    try:
        await page.click("#notready-btn")  # dialling out, not taking queue calls
        await expect(page.locator("#dial-class")).to_contain_text("本地")
        for key in "8006":
            await page.click(f'#dial-keypad button[data-digit="{key}"]')
        await page.click("#dial-btn")
        await agent_phone.expect("confirmed", timeout_s=20)  # the agent's phone first
        await customer.expect("confirmed", timeout_s=20)  # then the number
        panel = page.locator("#call-panel")
        await expect(panel).to_have_attribute("data-status", "connected", timeout=20_000)
        call_id = await panel.get_attribute("data-call-id")
        await asyncio.sleep(3.0)
        await page.click("#hangup-btn")
        await customer.expect("disconnected", timeout_s=10)
        await agent_phone.expect("disconnected", timeout_s=10)
        assert await customer.wait() == 0 and await agent_phone.wait() == 0  # WAVs closed
        # each hears the other
        Heard(tmp_path / "8006.wav", (AGENT_HZ, TARGET_HZ)).stretch({AGENT_HZ}, 2.0)
        Heard(tmp_path / "8003.wav", (AGENT_HZ, TARGET_HZ)).stretch({TARGET_HZ}, 2.0)
        assert call_id
        record = cdr(platform, call_id)
        assert record["agent_id"] == "agent3" and record["talk_ms"] >= 2000
    finally:
        await sign_out(page)
