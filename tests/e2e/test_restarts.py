"""The broker dies during a call and comes back empty (Tansu keeps topics in memory): every
service recovers by itself, /readyz tells the truth meanwhile, no event is lost, the logs say
what happened without flooding.

This stack has its own ports (the shared e2e platform keeps running beside it)."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    DTMF_PCAP,
    Api,
    Platform,
    Sipp,
    metric,
    options,
    register_phone,
    running_platform,
    wait_for,
)
from tests.ports import RESTARTS

pytestmark = pytest.mark.e2e

PORTS = RESTARTS.ports
SERVICES = ("gateway", "acd", "ivr", "crm", "recorder")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # the owner timeout short, so a replaced IVR's callers are adopted within seconds
    env = {"HOTLINE_DRAIN_S": "60", "HOTLINE_GATEWAY_FLOW_OWNER_TIMEOUT_S": "3"}
    with running_platform(
        tmp_path_factory.mktemp("restart"), PORTS, RESTARTS.rtp, extra_env=env
    ) as p:
        yield p


def readyz(service: str) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{PORTS[f'{service.upper()}_METRICS_PORT']}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def log_out(api: Api) -> None:
    """Leave the ACD so the next test's calls never ring this agent."""
    wait_for(
        lambda: api.call("POST", "/api/agent/logout", {})[0] in (200, 404),
        timeout_s=30,
        what="the agent logged out",
    )


def cdr(api: Api, ani: str) -> dict | None:
    status, body = api.call("GET", "/api/cdrs?limit=100")
    assert status == 200, body
    return next((row for row in body["cdrs"] if row["ani"] == ani), None)


def test_broker_restart_loses_no_call_and_no_event(stack: Platform, tmp_path: Path) -> None:
    def sipp(scenario: str, port: int, **kw: object) -> Sipp:
        return Sipp(scenario, port, stack.sip_port, log_dir=tmp_path, **kw)  # type: ignore[arg-type]

    phones = {
        ext: sipp("phone_uas.xml", port, media_port=port + 1, timeout_s=90)
        for ext, port in (("8010", 17011), ("8011", 17021))
    }
    register_phone(sipp, "8010", 17010, 17011)
    register_phone(sipp, "8011", 17020, 17021)
    agents = {}
    for n in ("agent10", "agent11"):
        agents[n] = Api(stack.http)
        agents[n].login(n, f"{n}-demo")
        agents[n].agent_ready()
    sup = Api(stack.http)
    sup.login("supervisor", "supervisor-demo")

    def call(port: int, ani: str, talk_ms: int) -> Sipp:
        return sipp(
            "caller.xml",
            port,
            media_port=port + 2,
            keys={
                "service": "10000",
                "caller": ani,
                "dtmf_pcap": DTMF_PCAP.format(1),
                "talk_ms": str(talk_ms),
            },
            extra=["-s", "10000"],
            timeout_s=90,
        )

    # A call is talking when the broker dies; its caller hangs up during the outage.
    during = call(17030, "5557001", 9000)
    wait_for(
        lambda: any("INVITE sip:" in p.messages() for p in phones.values()),
        timeout_s=30,
        what="an agent phone ringing for the first call",
    )
    time.sleep(1.0)
    logs_before = {s: (stack.var_dir / "log" / f"{s}.log").stat().st_size for s in SERVICES}
    killed_at = time.monotonic()
    stack.stack.kill("broker")

    # /readyz tells the truth while the broker is gone.
    for service in SERVICES:
        status, body = wait_for(
            lambda s=service: (r := readyz(s))[0] == 503 and r,
            timeout_s=20,
            what=f"{service} /readyz red without the broker",
        )
        assert any("kafka" in name and not c["ok"] for name, c in body["checks"].items()), body
    time.sleep(max(0.0, 5.0 - (time.monotonic() - killed_at)))
    stack.stack.restart("broker")
    back_at = time.monotonic()
    for service in SERVICES:
        wait_for(
            lambda s=service: readyz(s)[0] == 200,
            timeout_s=40,
            what=f"{service} ready again after the broker came back",
        )
    recovered_s = time.monotonic() - back_at
    assert during.wait(60) == 0, during.explain()

    # A new call after the restart goes all the way through.
    after = call(17040, "5557002", 3000)
    assert after.wait(60) == 0, after.explain()

    # No event lost: both calls have complete CDRs (the first one's end was published after
    # the broker came back; its CallOffered went to the topic the broker lost, and is not needed
    # again since the CRM keeps the CDR in its database).
    first = wait_for(
        lambda: (r := cdr(sup, "5557001")) and r.get("ended_at") and r,
        timeout_s=30,
        what="the first call's CDR ended",
    )
    assert first["end_reason"] == "caller_hangup" and first["agent_id"], first
    second = wait_for(
        lambda: (r := cdr(sup, "5557002")) and r.get("ended_at") and r.get("recording_id") and r,
        timeout_s=30,
        what="the second call's CDR with its recording",
    )
    assert second["agent_id"] and not second["abandoned"], second

    # The outage is told once per state change, not per retry: a few lines per service.
    for service in SERVICES:
        path = stack.var_dir / "log" / f"{service}.log"
        with path.open("rb") as f:
            f.seek(logs_before[service])
            lines = [json.loads(line) for line in f.read().splitlines() if line.strip()]
        noisy = [line for line in lines if line["level"] in ("warning", "error")]
        assert len(noisy) < 40, f"{service}: {len(noisy)} warnings/errors, e.g. {noisy[:5]}"
    print(f"recovered {recovered_s:.1f}s after the broker restarted")
    for p in phones.values():
        p.stop()
    for api in agents.values():
        log_out(api)


def test_gateway_restart_ends_its_calls_and_keeps_registrations(
    stack: Platform, tmp_path: Path
) -> None:
    def sipp(scenario: str, port: int, **kw: object) -> Sipp:
        return Sipp(scenario, port, stack.sip_port, log_dir=tmp_path, **kw)  # type: ignore[arg-type]

    phone = sipp("phone_uas.xml", 17051, media_port=17052, timeout_s=60)
    register_phone(sipp, "8012", 17050, 17051)
    agent = Api(stack.http)
    agent.login("agent12", "agent12-demo")
    agent.agent_ready()
    sup = Api(stack.http)
    sup.login("supervisor", "supervisor-demo")

    talking = sipp(
        "caller.xml",
        17060,
        media_port=17062,
        keys={
            "service": "10000",
            "caller": "5557101",
            "dtmf_pcap": DTMF_PCAP.format(1),
            "talk_ms": "20000",
        },
        extra=["-s", "10000"],
        timeout_s=40,
    )
    wait_for(
        lambda: agent.call("GET", "/api/agent")[1].get("state") == "on_call",
        timeout_s=30,
        what="agent12 on the call",
    )
    time.sleep(2.0)  # some talk (and some recording)
    stack.stack.kill("gateway")
    stack.stack.restart("gateway")
    stack.stack.wait_ready(("gateway",), timeout_s=30)

    # The call the dead gateway was holding is closed everywhere: CDR, agent, recording.
    row = wait_for(
        lambda: (r := cdr(sup, "5557101")) and r.get("ended_at") and r,
        timeout_s=30,
        what="the CDR of the call the gateway lost",
    )
    assert row["end_reason"] == "gateway_restart", row
    assert row["agent_id"] == "agent12"
    wait_for(
        lambda: agent.call("GET", "/api/agent")[1].get("state") == "ready",
        timeout_s=30,
        what="agent12 through wrap-up back to ready",
    )
    row = wait_for(
        lambda: (r := cdr(sup, "5557101")) and r.get("recording_id") and r,
        timeout_s=40,
        what="the lost call's recording in its CDR",
    )
    # what the dead gateway had spooled is uploaded by the new one, flagged as cut short
    assert row["recording_status"] == "partial", row
    talking.stop()
    phone.stop()

    # The phone did not register again, yet the restarted gateway still reaches it.
    phone = sipp("phone_uas.xml", 17051, media_port=17052, timeout_s=60)
    after = sipp(
        "caller.xml",
        17070,
        media_port=17072,
        keys={
            "service": "10000",
            "caller": "5557102",
            "dtmf_pcap": DTMF_PCAP.format(1),
            "talk_ms": "2000",
        },
        extra=["-s", "10000"],
        timeout_s=60,
    )
    assert after.wait(60) == 0, after.explain()
    assert phone.wait(30) == 0, phone.explain()
    assert "INVITE sip:8012@" in phone.messages()
    row = wait_for(
        lambda: (r := cdr(sup, "5557102")) and r.get("ended_at") and r,
        timeout_s=30,
        what="the CDR of the call after the restart",
    )
    assert row["agent_id"] == "agent12" and row["end_reason"] == "caller_hangup", row
    log_out(agent)


def test_sigterm_drains_the_gateway(stack: Platform, tmp_path: Path) -> None:
    def sipp(scenario: str, port: int, **kw: object) -> Sipp:
        return Sipp(scenario, port, stack.sip_port, log_dir=tmp_path, **kw)  # type: ignore[arg-type]

    phone = sipp("phone_uas.xml", 17081, media_port=17082, timeout_s=60)
    register_phone(sipp, "8013", 17080, 17081)
    agent = Api(stack.http)
    agent.login("agent13", "agent13-demo")
    agent.agent_ready()
    sup = Api(stack.http)
    sup.login("supervisor", "supervisor-demo")
    talking = sipp(
        "caller.xml",
        17090,
        media_port=17092,
        keys={
            "service": "10000",
            "caller": "5557201",
            "dtmf_pcap": DTMF_PCAP.format(1),
            "talk_ms": "8000",
        },
        extra=["-s", "10000"],
        timeout_s=60,
    )
    wait_for(
        lambda: agent.call("GET", "/api/agent")[1].get("state") == "on_call",
        timeout_s=30,
        what="agent13 on the call",
    )
    gateway = stack.stack.procs["gateway"]
    gateway.send_signal(signal.SIGTERM)

    # Draining: readiness red and says so, the gauge is up, new calls and keepalives get 503.
    status, body = wait_for(
        lambda: (r := readyz("gateway"))[0] == 503 and r,
        timeout_s=10,
        what="the gateway's /readyz red while draining",
    )
    assert "draining" in json.dumps(body), body
    assert metric(stack.metrics("gateway"), "hotline_gateway_draining") == 1
    answer = options(stack.sip_port)
    assert answer.startswith("SIP/2.0 503") and "Retry-After:" in answer, answer
    refused = sipp(
        "caller_refused.xml",
        17095,
        keys={"service": "10000", "caller": "5557202", "status": "503"},
        extra=["-s", "10000"],
        timeout_s=20,
    )
    assert refused.wait(30) == 0, refused.explain()
    assert "Retry-After:" in refused.messages()

    # The live call goes on to its natural end, then the gateway exits by itself.
    assert talking.wait(60) == 0, talking.explain()
    assert gateway.wait(30) == 0, "the gateway exits cleanly once its calls are done"
    row = wait_for(
        lambda: (r := cdr(sup, "5557201")) and r.get("ended_at") and r,
        timeout_s=30,
        what="the drained call's CDR",
    )
    assert row["end_reason"] == "caller_hangup", row
    assert cdr(sup, "5557202") is None, "a refused call never became a call"
    stack.stack.restart("gateway")
    stack.stack.wait_ready(("gateway",), timeout_s=30)
    phone.stop()
    log_out(agent)


@dataclass
class InIvr:
    """An agent Ready on a registered phone, and a caller (digit 1: sales) the IVR has just
    answered: they hear the greeting and key the digit 1.5 s after the answer."""

    phone: Sipp
    agent: Api
    supervisor: Api
    caller: Sipp
    ani: str


def caller_in_the_ivr(
    stack: Platform,
    tmp_path: Path,
    n: int,
    ani: str,
    phone_port: int,
    caller_port: int,
    talk_ms: int = 3000,
) -> InIvr:
    def sipp(scenario: str, port: int, **kw: object) -> Sipp:
        return Sipp(scenario, port, stack.sip_port, log_dir=tmp_path, **kw)  # type: ignore[arg-type]

    phone = sipp("phone_uas.xml", phone_port + 1, media_port=phone_port + 2, timeout_s=60)
    register_phone(sipp, f"80{n:02d}", phone_port, phone_port + 1)
    agent = Api(stack.http)
    agent.login(f"agent{n}", f"agent{n}-demo")
    agent.agent_ready()
    sup = Api(stack.http)
    sup.login("supervisor", "supervisor-demo")
    caller = sipp(
        "caller.xml",
        caller_port,
        media_port=caller_port + 2,
        keys={
            "service": "10000",
            "caller": ani,
            "dtmf_pcap": DTMF_PCAP.format(1),
            "talk_ms": str(talk_ms),
        },
        extra=["-s", "10000"],
        timeout_s=60,
    )
    wait_for(
        lambda: "SIP/2.0 200" in caller.messages(),
        timeout_s=30,
        interval_s=0.02,
        what="the IVR answering the caller",
    )
    return InIvr(phone, agent, sup, caller, ani)


def served_by(call: InIvr, stack: Platform, agent_id: str, what: str) -> None:
    """The caller reaches the agent, talks, hangs up; the CDR says so; the IVR is back."""
    wait_for(
        lambda: call.agent.call("GET", "/api/agent")[1].get("state") == "on_call",
        timeout_s=40,
        what=f"{agent_id} on the call {what}",
    )
    assert call.caller.wait(60) == 0, call.caller.explain()
    row = wait_for(
        lambda: (r := cdr(call.supervisor, call.ani)) and r.get("ended_at") and r,
        timeout_s=30,
        what="the call's CDR",
    )
    assert (row["queue"], row["agent_id"]) == ("sales", agent_id), row


def test_sigterm_lets_the_ivr_hand_its_callers_to_the_acd(stack: Platform, tmp_path: Path) -> None:
    """A rollout of the IVR: a caller in the greeting when SIGTERM arrives is still queued and
    answered (before, the IVR cancelled the flow and left the caller on a silent line)."""
    call = caller_in_the_ivr(stack, tmp_path, 15, "5557301", 17110, 17120)
    ivr = stack.stack.procs["ivr"]
    ivr.send_signal(signal.SIGTERM)
    status, body = wait_for(
        lambda: (r := readyz("ivr"))[0] == 503 and r,
        timeout_s=10,
        interval_s=0.05,
        what="the IVR's /readyz red while draining",
    )
    assert "draining" in json.dumps(body), body
    # the flow goes on: the digit picks sales, the ACD rings the agent, they talk
    served_by(call, stack, "agent15", "the draining IVR handed over")
    assert ivr.wait(30) == 0, "the IVR exits cleanly once its flows are done"
    stack.stack.restart("ivr")
    stack.stack.wait_ready(("ivr",), timeout_s=30)
    call.phone.stop()
    log_out(call.agent)


def test_an_ivr_killed_in_a_callers_menu_takes_the_call_up_again(
    stack: Platform, tmp_path: Path
) -> None:
    """kill -9 (an OOM, a crash) while a caller hears the greeting: the flow died with the
    process and the offer was committed, but the gateway knows which IVR answered the call,
    and the IVR started again takes it up: the caller reaches an agent."""
    call = caller_in_the_ivr(stack, tmp_path, 16, "5557401", 17130, 17140)
    time.sleep(1.0)  # the offer's offset committed (every 0.5 s); the digit comes at 1.5 s
    stack.stack.kill("ivr")
    stack.stack.restart("ivr")
    served_by(call, stack, "agent16", "the restarted IVR took up")
    log = (stack.stack.log_dir / "ivr.log").read_text(errors="replace")
    assert "took up 1 calls" in log
    stack.stack.wait_ready(("ivr",), timeout_s=30)
    call.phone.stop()
    log_out(call.agent)


def test_the_callers_of_an_ivr_replaced_under_a_new_name_are_adopted(
    stack: Platform, tmp_path: Path
) -> None:
    """kill -9 and a new pod: the IVR comes back under another name (its node died, it was
    evicted), so no restart takes up the old one's calls; once the old one has been silent for
    the gateway's owner timeout (3 s here, 20 s by default) the live IVR's heartbeat adopts
    them: the caller reaches an agent instead of a silent line."""
    # the caller stays on the line 15 s after the digit: the adoption takes up to the timeout
    # and one heartbeat (5 s) after the IVR's restart
    call = caller_in_the_ivr(stack, tmp_path, 14, "5557501", 17150, 17160, talk_ms=15000)
    time.sleep(1.0)  # the offer's offset committed (every 0.5 s); the digit comes at 1.5 s
    stack.stack.kill("ivr")
    stack.stack.env["HOTLINE_IVR_INSTANCE"] = "ivr-on-another-node"
    try:
        stack.stack.restart("ivr")
    finally:
        del stack.stack.env["HOTLINE_IVR_INSTANCE"]
    served_by(call, stack, "agent14", "the new IVR adopted")
    ivr_log = (stack.stack.log_dir / "ivr.log").read_text(errors="replace")
    assert "took up 1 calls whose flows stopped with an IVR that is gone" in ivr_log
    gateway_log = (stack.stack.log_dir / "gateway.log").read_text(errors="replace")
    assert "handed to IVR ivr-on-another-node" in gateway_log
    stack.stack.wait_ready(("ivr",), timeout_s=30)
    call.phone.stop()
    log_out(call.agent)
