"""Prometheus rules: `promtool check rules` on the file and on what the chart renders, and
`promtool test rules` with a firing and a quiet case for every alert and checks of the KPI
recording rules (including "today" across the site's midnight).

The promtool test file is built here from the case table below: expected annotations are the
rule's own templates with the case's labels filled in (annotations use only $labels), so a case
states what an operator would see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import CHART, by_kind, render, values_of

RULES_FILE = CHART / "rules" / "hotline.rules.yaml"
PROMTOOL = shutil.which("promtool")
SITE = 'site="main"'
S = f'{SITE},queue="sales"'
P = f'{SITE},queue="support"'
RUNBOOK = "https://github.com/hotline-cc/hotline/blob/main/docs/runbook.md"
#: local midnight 20 minutes after the test's time 0 (1970-01-01T00:00Z)
UTC_OFFSET = -1200


def promtool() -> str:
    if PROMTOOL is None:
        pytest.fail("promtool is missing: run `make setup` (Debian package prometheus)")
    return PROMTOOL


def rendered_rules(card: str = "dahdi:1,2,3,4") -> dict:
    values = values_of(CHART / "ci" / "default-values.yaml")
    values["gateway"] = {"analog": {"card": card}}
    values["monitoring"] = {"todayUtcOffsetSeconds": UTC_OFFSET}
    (rule,) = by_kind(render(values), "PrometheusRule")
    return rule["spec"]


def alerts_by_name() -> dict[str, dict]:
    return {r["alert"]: r for g in rendered_rules()["groups"] for r in g["rules"] if "alert" in r}


def queue_series(
    label: str, offered: str, answered: str, within: str, abandoned: str, wait_sum: str = "0+10x240"
) -> list[dict]:
    return [
        {"series": f"hotline_queue_offered_total{{{label}}}", "values": offered},
        {"series": f"hotline_queue_answered_total{{{label}}}", "values": answered},
        {
            "series": f'hotline_queue_answer_wait_seconds_bucket{{{label},le="20.0"}}',
            "values": within,
        },
        {"series": f"hotline_queue_answer_wait_seconds_count{{{label}}}", "values": answered},
        {"series": f"hotline_queue_answer_wait_seconds_sum{{{label}}}", "values": wait_sum},
        {"series": f"hotline_queue_abandoned_total{{{label}}}", "values": abandoned},
    ]


def handle_series(label: str, talk: str, hold: str, wrap: str, calls: str) -> list[dict]:
    """hotline_queue_handle_time_seconds: sums per phase, one observation per phase per call."""
    out = []
    for phase, total in (("talk", talk), ("hold", hold), ("wrap_up", wrap)):
        metric = "hotline_queue_handle_time_seconds"
        out.append({"series": f'{metric}_sum{{{label},phase="{phase}"}}', "values": total})
        out.append({"series": f'{metric}_count{{{label},phase="{phase}"}}', "values": calls})
    return out


def _refused(limit: str) -> str:
    return f'hotline_sip_admission_refused_total{{{SITE},limit="{limit}"}}'


def _capacity(possible: str) -> list[dict]:
    """Calls possible (these values) out of 100 calls max."""
    return [
        {"series": f"hotline_gateway_calls_possible{{{SITE}}}", "values": possible},
        {"series": f"hotline_gateway_calls_max{{{SITE}}}", "values": "100x60"},
    ]


def _lateness(per_step: dict[str, int]) -> list[dict]:
    """hotline_media_tick_lateness_seconds growing by these cumulative bucket counts each 30 s
    step (1,500 ticks: 20 ms ticks for 30 s)."""
    metric = "hotline_media_tick_lateness_seconds"
    out = [
        {"series": f'{metric}_bucket{{{SITE},le="{le}"}}', "values": f"0+{n}x60"}
        for le, n in per_step.items()
    ]
    out.append({"series": f"{metric}_count{{{SITE}}}", "values": f"0+{per_step['+Inf']}x60"})
    return out


#: alert -> (firing case, quiet case); a case is (input series, eval time, firing labels)
CASES: dict[str, tuple[tuple[list[dict], str, list[dict]], tuple[list[dict], str]]] = {
    "HotlineServiceLevelBurnFast": (
        (
            queue_series(S, "0+2x240", "0+1x240", "0+0x240", "0+1x240"),
            "30m",
            [{"site": "main", "queue": "sales"}],
        ),
        (queue_series(P, "0+2x240", "0+2x240", "0+2x240", "0+0x240"), "30m"),
    ),
    "HotlineServiceLevelBurnSlow": (
        (
            queue_series(S, "0+10x240", "0+10x240", "0+7x240", "0+0x240"),
            "1h",
            [{"site": "main", "queue": "sales"}],
        ),
        (queue_series(P, "0+10x240", "0+10x240", "0+9x240", "0+0x240"), "1h"),
    ),
    "HotlineQueueOldestWaitHigh": (
        (
            [{"series": f"hotline_queue_oldest_wait_seconds{{{S}}}", "values": "0+30x40"}],
            "10m",
            [{"site": "main", "queue": "sales"}],
        ),
        ([{"series": f"hotline_queue_oldest_wait_seconds{{{P}}}", "values": "0+1x40"}], "10m"),
    ),
    "HotlineCallsWaitingNoAgent": (
        (
            [  # sales waits: its agents are Not Ready; support's agent is Ready, for support only
                {"series": f"hotline_queue_calls_waiting{{{S}}}", "values": "1x20"},
                {"series": f'hotline_queue_agents{{{S},state="ready"}}', "values": "0x20"},
                {"series": f'hotline_queue_agents{{{S},state="not_ready"}}', "values": "3x20"},
                {"series": f"hotline_queue_calls_waiting{{{P}}}", "values": "1x20"},
                {"series": f'hotline_queue_agents{{{P},state="ready"}}', "values": "1x20"},
            ],
            "5m",
            [{"site": "main", "queue": "sales"}],
        ),
        (
            [
                {"series": f"hotline_queue_calls_waiting{{{S}}}", "values": "2x20"},
                {"series": f'hotline_queue_agents{{{S},state="on_call"}}', "values": "4x20"},
            ],
            "5m",
        ),
    ),
    "HotlineAfterCallWorkLong": (
        (
            handle_series(S, talk="0+120x240", hold="0+10x240", wrap="0+90x240", calls="0+1x240"),
            "30m",
            [{"site": "main", "queue": "sales"}],
        ),
        (  # 45 s of after-call work per call: within the standard
            handle_series(S, talk="0+120x240", hold="0+10x240", wrap="0+45x240", calls="0+1x240"),
            "30m",
        ),
    ),
    "HotlineAbandonRateHigh": (
        (
            queue_series(S, "0+2x240", "0+1x240", "0+1x240", "0+1x240"),
            "30m",
            [{"site": "main", "queue": "sales"}],
        ),
        (queue_series(P, "0+2x240", "0+2x240", "0+2x240", "0+0x240"), "30m"),
    ),
    "HotlineServiceDown": (
        (
            [
                {
                    "series": f'up{{job="hotline-acd",instance="10.1.2.3:9102",{SITE}}}',
                    "values": "0x10",
                }
            ],
            "4m",
            [{"job": "hotline-acd", "instance": "10.1.2.3:9102", "site": "main"}],
        ),
        (
            [
                {
                    "series": f'up{{job="hotline-acd",instance="10.1.2.3:9102",{SITE}}}',
                    "values": "1x10",
                },
                {"series": 'up{job="other",instance="x:1"}', "values": "0x10"},
            ],
            "4m",
        ),
    ),
    "HotlineServiceNotReady": (
        (
            [
                {
                    "series": f'hotline_ready{{job="hotline-crm",instance="10.1.2.4:9104",{SITE}}}',
                    "values": "0x20",
                },
                {
                    "series": 'kube_deployment_status_replicas_unavailable{namespace="cc",'
                    'deployment="hotline-ivr"}',
                    "values": "1x20",
                },
            ],
            "5m",
            [
                {"job": "hotline-crm", "instance": "10.1.2.4:9104", "site": "main"},
                {"namespace": "cc", "deployment": "hotline-ivr"},
            ],
        ),
        (
            [
                {
                    "series": f'hotline_ready{{job="hotline-crm",instance="10.1.2.4:9104",{SITE}}}',
                    "values": "1x20",
                },
                {
                    "series": 'kube_deployment_status_replicas_unavailable{namespace="cc",'
                    'deployment="hotline-ivr"}',
                    "values": "0x20",
                },
            ],
            "5m",
        ),
    ),
    "HotlineGatewayNotOnCardNode": (
        (
            [
                {
                    "series": f'hotline_analog_lines{{{SITE},state="out_of_service"}}',
                    "values": "4x30",
                }
            ],
            "10m",
            [{"site": "main"}],
        ),
        (
            [
                {"series": f'hotline_analog_lines{{{SITE},state="idle"}}', "values": "4x30"},
                {
                    "series": f'hotline_analog_lines{{{SITE},state="out_of_service"}}',
                    "values": "0x30",
                },
            ],
            "10m",
        ),
    ),
    "HotlineAnalogLineAlarm": (
        (
            [
                {
                    "series": f'hotline_analog_lines{{{SITE},state="out_of_service"}}',
                    "values": "1x20",
                },
                {
                    "series": 'hotline_analog_span_alarm{site="branch",span="1",alarm="red"}',
                    "values": "1x20",
                },
            ],
            "5m",
            [{"site": "main"}, {"site": "branch"}],
        ),
        (
            [
                {
                    "series": f'hotline_analog_lines{{{SITE},state="out_of_service"}}',
                    "values": "0x20",
                },
                {
                    "series": 'hotline_analog_span_alarm{site="branch",span="1",alarm="red"}',
                    "values": "0x20",
                },
            ],
            "5m",
        ),
    ),
    "HotlineGatewayDrainTooLong": (
        (
            [{"series": f"hotline_gateway_draining{{{SITE}}}", "values": "1x60"}],
            "20m",
            [{"site": "main"}],
        ),
        ([{"series": f"hotline_gateway_draining{{{SITE}}}", "values": "1x60"}], "10m"),
    ),
    "HotlineSipErrorRate": (
        (
            [
                {
                    "series": f'hotline_sip_requests_total{{{SITE},method="INVITE"}}',
                    "values": "0+10x40",
                },
                {
                    "series": f'hotline_gateway_rejected_total{{{SITE},status="503"}}',
                    "values": "0+5x40",
                },
            ],
            "15m",
            [{"site": "main"}],
        ),
        (
            [
                {
                    "series": f'hotline_sip_requests_total{{{SITE},method="INVITE"}}',
                    "values": "0+10x40",
                },
                {
                    "series": f'hotline_gateway_rejected_total{{{SITE},status="404"}}',
                    "values": "0+1x40",
                },
            ],
            "15m",
        ),
    ),
    "HotlineKafkaConsumerLagGrowing": (
        (
            [
                {
                    "series": f'hotline_kafka_consumer_lag{{{SITE},group="crm",topic="calls"}}',
                    "values": "0+50x60",
                }
            ],
            "25m",
            [{"site": "main", "group": "crm"}],
        ),
        (
            [
                {
                    "series": f'hotline_kafka_consumer_lag{{{SITE},group="crm",topic="calls"}}',
                    "values": "500x60",
                }
            ],
            "25m",
        ),
    ),
    "HotlineRecordingFailures": (
        (
            [
                {
                    "series": f'hotline_recording_failures_total{{{SITE},reason="io_error"}}',
                    "values": "0 0 0 1 1 1 1 1",
                }
            ],
            "2m",
            [{"site": "main"}],
        ),
        (
            [
                {
                    "series": f'hotline_recording_failures_total{{{SITE},reason="io_error"}}',
                    "values": "0x8",
                },
                {"series": f"hotline_gateway_recording_failures_total{{{SITE}}}", "values": "3x8"},
            ],
            "2m",
        ),
    ),
    "HotlineIvrTurnsCallersAway": (
        (
            [
                {
                    "series": f'hotline_ivr_calls_total{{{SITE},flow="main",outcome="acd-refused"}}',
                    "values": "0 0 0 1 1 1 1 1",
                }
            ],
            "2m",
            [{"site": "main"}],
        ),
        (  # queued callers and callers who hang up are the IVR's normal day
            [
                {
                    "series": f'hotline_ivr_calls_total{{{SITE},flow="main",outcome="queued"}}',
                    "values": "0+5x8",
                },
                {
                    "series": f'hotline_ivr_calls_total{{{SITE},flow="main",outcome="caller-gone"}}',
                    "values": "0+1x8",
                },
                {
                    "series": f'hotline_ivr_calls_total{{{SITE},flow="main",outcome="error"}}',
                    "values": "2x8",
                },
            ],
            "2m",
        ),
    ),
    "HotlineIvrPromptMissing": (
        (
            [
                {
                    "series": f'hotline_ivr_prompts_missing_total{{{SITE},flow="main",prompt="x"}}',
                    "values": "0 0 2 2 2 2 2 2",
                }
            ],
            "2m",
            [{"site": "main", "flow": "main", "prompt": "x"}],
        ),
        (  # skipped once, long ago
            [
                {
                    "series": f'hotline_ivr_prompts_missing_total{{{SITE},flow="main",prompt="x"}}',
                    "values": "0 1" + " 1" * 40,
                }
            ],
            "20m",
        ),
    ),
    "HotlineIvrFlowsTakenOver": (
        (
            [
                {
                    "series": f'hotline_ivr_calls_total{{{SITE},flow="main",outcome="taken-over"}}',
                    "values": "0 0 3 3 3 3 3 3",
                },
                {
                    "series": f'hotline_ivr_calls_total{{{SITE},flow="main",outcome="queued"}}',
                    "values": "0 10 20 30 40 50 60 70",
                },
            ],
            "2m",
            [{"site": "main"}],
        ),
        (  # flows queue their callers; none taken over
            [
                {
                    "series": f'hotline_ivr_calls_total{{{SITE},flow="main",outcome="queued"}}',
                    "values": "0 10 20 30 40 50 60 70",
                }
            ],
            "5m",
        ),
    ),
    "HotlineBrokerLostEvents": (
        (
            [
                {
                    "series": f'hotline_events_republished_total{{{SITE},source="gateway"}}',
                    "values": "0 0 2048 2048 2048 2048",
                }
            ],
            "2m",
            [{"site": "main", "source": "gateway"}],
        ),
        (  # restored once, long ago
            [
                {
                    "series": f'hotline_events_republished_total{{{SITE},source="gateway"}}',
                    "values": "0 40" + " 40" * 40,
                }
            ],
            "20m",
        ),
    ),
    "HotlineRecordingsWaitingAtGateway": (
        (
            [
                {
                    "series": f"hotline_gateway_recording_spool_oldest_seconds{{{SITE}}}",
                    "values": "0+30x60",  # waits on and on (one sample every 30 s)
                }
            ],
            "25m",
            [{"site": "main"}],
        ),
        (  # recordings come and go: the oldest never waits long
            [
                {
                    "series": f"hotline_gateway_recording_spool_oldest_seconds{{{SITE}}}",
                    "values": " ".join(["0 30 60"] * 16),
                }
            ],
            "22m",
        ),
    ),
    "HotlineGatewayRefusingCalls": (
        (  # 10 calls refused by the gateway's rate cap every 30 s
            [{"series": _refused("gateway_rate"), "values": "0+10x60"}],
            "15m",
            [{"site": "main", "limit": "gateway_rate"}],
        ),
        (  # a flood from one source (not capacity) and a burst of 3 at the cap, then none
            [
                {"series": _refused("source_rate"), "values": "0+10x60"},
                {"series": _refused("gateway_rate"), "values": "0 0 3x58"},
            ],
            "15m",
        ),
    ),
    "HotlineGatewayNearCapacity": (
        (_capacity("10x60"), "20m", [{"site": "main"}]),
        # a quarter free, and a dip under a fifth shorter than 15 minutes
        (_capacity("25x20 5x20 25x20"), "25m"),
    ),
    "HotlineGatewayMediaLate": (
        (  # 1 tick in 10 between 5 and 10 ms late
            _lateness({"0.001": 1350, "0.005": 1350, "0.01": 1500, "+Inf": 1500}),
            "25m",
            [{"site": "main"}],
        ),
        (  # every tick within 5 ms, most within 1, and a frame skipped now and then
            _lateness({"0.001": 1490, "0.005": 1500, "0.01": 1500, "+Inf": 1500})
            + [{"series": f"hotline_media_skipped_frames_total{{{SITE}}}", "values": "0+1x60"}],
            "25m",
        ),
    ),
    "HotlinePoorMediaQuality": (
        (
            [
                {"series": f"hotline_rtp_packets_lost_total{{{SITE}}}", "values": "0+5x60"},
                {"series": f"hotline_rtp_packets_expected_total{{{SITE}}}", "values": "0+100x60"},
            ],
            "25m",
            [{"site": "main"}],
        ),
        (
            [
                {"series": f"hotline_rtp_packets_lost_total{{{SITE}}}", "values": "0+1x60"},
                {"series": f"hotline_rtp_packets_expected_total{{{SITE}}}", "values": "0+100x60"},
            ],
            "25m",
        ),
    ),
}


def expand(template: str, labels: dict[str, str]) -> str:
    assert "$value" not in template, "annotations use $labels only (stable, testable text)"
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def expected(rule: dict, labels: dict[str, str]) -> dict:
    return {
        "exp_labels": {**labels, **rule["labels"]},
        "exp_annotations": {k: expand(v, labels) for k, v in rule["annotations"].items()},
    }


def build_test_file(tmp_path: Path) -> Path:
    rules = alerts_by_name()
    tests = []
    for name, ((series, at, firing), (quiet_series, quiet_at)) in CASES.items():
        tests.append(
            {
                "name": f"{name} fires",
                "interval": "30s",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": name,
                        "exp_alerts": [expected(rules[name], f) for f in firing],
                    }
                ],
            }
        )
        tests.append(
            {
                "name": f"{name} stays quiet",
                "interval": "30s",
                "input_series": quiet_series,
                "alert_rule_test": [{"eval_time": quiet_at, "alertname": name, "exp_alerts": []}],
            }
        )
    tests.append(kpi_test())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rendered_rules(), sort_keys=False))
    path = tmp_path / "hotline.test.yaml"
    path.write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yaml"], "evaluation_interval": "30s", "tests": tests},
            sort_keys=False,
            width=200,
        )
    )
    return path


def kpi_test() -> dict:
    """Service level, ASA, abandon rate over 5 minutes and since local midnight."""
    sales = queue_series(S, "0+2x240", "0+1x240", "0+0x240", "0+1x240", wait_sum="0+30x240")
    support = queue_series(P, "0+2x240", "0+2x240", "0+2x240", "0+0x240")
    # sales: one handled call per 30 s step, each 100 s talk + 20 s hold + 30 s after-call work
    sales += handle_series(S, talk="0+100x240", hold="0+20x240", wrap="0+30x240", calls="0+1x240")
    between = "(({e} > bool {lo}) * ({e} < bool {hi}))"
    return {
        "name": "queue KPIs",
        "interval": "30s",
        "input_series": sales + support,
        "promql_expr_test": [
            {
                "expr": "hotline:queue_service_level:ratio5m",
                "eval_time": "15m",
                "exp_samples": [
                    {
                        "labels": 'hotline:queue_service_level:ratio5m{site="main",queue="sales"}',
                        "value": 0,
                    },
                    {
                        "labels": 'hotline:queue_service_level:ratio5m{site="main",queue="support"}',
                        "value": 1,
                    },
                ],
            },
            {
                "expr": 'hotline:queue_asa_seconds:5m{queue="sales"}',
                "eval_time": "15m",
                "exp_samples": [
                    {
                        "labels": 'hotline:queue_asa_seconds:5m{site="main",queue="sales"}',
                        "value": 30,
                    }
                ],
            },
            {
                "expr": "hotline:queue_abandon_rate:ratio1h",
                "eval_time": "15m",
                "exp_samples": [
                    {
                        "labels": 'hotline:queue_abandon_rate:ratio1h{site="main",queue="sales"}',
                        "value": 0.5,
                    },
                    {
                        "labels": 'hotline:queue_abandon_rate:ratio1h{site="main",queue="support"}',
                        "value": 0,
                    },
                ],
            },
            # AHT = (talk + hold + after-call work) / handled calls
            {
                "expr": 'hotline:queue_aht_seconds:5m{queue="sales"}',
                "eval_time": "15m",
                "exp_samples": [
                    {
                        "labels": 'hotline:queue_aht_seconds:5m{site="main",queue="sales"}',
                        "value": 150,
                    }
                ],
            },
            {
                "expr": 'hotline:queue_aht_seconds:_today{queue="sales"}',
                "eval_time": "30m",
                "exp_samples": [
                    {
                        "labels": 'hotline:queue_aht_seconds:_today{site="main",queue="sales"}',
                        "value": 150,
                    }
                ],
            },
            # 19 minutes after the start, local time 23:59: today holds every minute so far
            {
                "expr": between.format(
                    e='hotline:queue_offered:increase_today{queue="sales"}', lo=70, hi=80
                ),
                "eval_time": "19m",
                "exp_samples": [{"labels": '{site="main",queue="sales"}', "value": 1}],
            },
            # 30 minutes after the start, local 00:10: only the 10 minutes since midnight count
            {
                "expr": between.format(
                    e='hotline:queue_offered:increase_today{queue="sales"}', lo=35, hi=45
                ),
                "eval_time": "30m",
                "exp_samples": [{"labels": '{site="main",queue="sales"}', "value": 1}],
            },
            {
                "expr": "hotline:queue_service_level:ratio_today",
                "eval_time": "30m",
                "exp_samples": [
                    {
                        "labels": 'hotline:queue_service_level:ratio_today{site="main",queue="sales"}',
                        "value": 0,
                    },
                    {
                        "labels": 'hotline:queue_service_level:ratio_today{site="main",queue="support"}',
                        "value": 1,
                    },
                ],
            },
        ],
    }


def test_rules_file_passes_promtool_check() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES_FILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("card", ["none", "dahdi:1,2,3,4"])
def test_rendered_rules_pass_promtool_check(tmp_path: Path, card: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rules(card)))
    proc = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case_and_a_runbook_section() -> None:
    rules = alerts_by_name()
    assert set(CASES) == set(rules)
    runbook = (CHART.parents[1] / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^## (.+)$", runbook, flags=re.MULTILINE)
    }
    for name, rule in rules.items():
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], name
        assert ann["runbook_url"] == f"{RUNBOOK}#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbook.md has no section '## {name}'"
        assert rule["labels"]["severity"] in ("page", "ticket")


def test_promtool_unit_tests(tmp_path: Path) -> None:
    path = build_test_file(tmp_path)
    proc = subprocess.run(
        [promtool(), "test", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "SUCCESS" in proc.stdout
