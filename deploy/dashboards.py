"""Writes Hotline's Grafana dashboards (charts/hotline/dashboards/*.json) from code with the
grafana-foundation-sdk; the chart ships each as a ConfigMap labelled for the Grafana sidecar.

    .venv/bin/python deploy/dashboards.py          # rewrite the JSON files
    .venv/bin/python deploy/dashboards.py --check  # exit 1 if a file is stale

Every dashboard opens with how fresh its data is, and every KPI panel states its formula in its
description. Queries select on `site` and, on the wallboard, `queue` (dashboard variables).
`PANELS_AWAITING_METRICS` names the panels whose metrics the services do not export yet; the
"returns data" test (tests/deploy/test_observability.py) skips exactly those.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "charts" / "hotline" / "dashboards"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SITE = 'site=~"$site"'
SQ = 'site=~"$site", queue=~"$queue"'
RATE = "$__rate_interval"

#: dashboard uid -> panel titles whose queries need metrics the services do not export yet
PANELS_AWAITING_METRICS: dict[str, set[str]] = {
    "hotline-wallboard": set(),
    "hotline-gateway": set(),
    "hotline-platform": {},
}


def query(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def green_red(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def stat_panel(
    title: str,
    description: str,
    expr: str,
    unit: str,
    legend: str = "",
    thresholds: db.ThresholdsConfig | None = None,
    w: int = 4,
    h: int = 5,
    decimals: int | None = None,
) -> stat.Panel:
    p = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(query(expr, legend, instant=True))
        .unit(unit)
        .span(w)
        .height(h)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
    )
    if thresholds is not None:
        p = p.thresholds(thresholds)
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def series_panel(
    title: str,
    description: str,
    targets: list[prom.Dataquery],
    unit: str,
    w: int = 12,
    h: int = 8,
    stack: bool = False,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull"])
        )
    )
    if stack:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(60)
    for i, t in enumerate(targets):
        p = p.with_target(t.ref_id(chr(ord("A") + i)))
    return p


def freshness(job_regex: str, what: str) -> stat.Panel:
    """Seconds since Prometheus last scraped the services behind this dashboard."""
    return stat_panel(
        "Data age",
        f"How old the newest sample of {what} is: time() - max(timestamp(up)) for "
        "the jobs behind this dashboard. Over 30 s means the numbers below are stale.",
        f'time() - max(timestamp(up{{job=~"{job_regex}", {SITE}}}))',
        "s",
        thresholds=green_red((None, "green"), (30, "orange"), (120, "red")),
        w=3,
        decimals=0,
    )


def variables(d: db.Dashboard, queue: bool) -> db.Dashboard:
    d = d.with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    d = d.with_variable(
        db.QueryVariable("site")
        .label("Site")
        .datasource(DS)
        .query({"query": 'label_values(up{job=~"hotline-.*"}, site)', "refId": "site"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    if queue:
        d = d.with_variable(
            db.QueryVariable("queue")
            .label("Queue")
            .datasource(DS)
            .query(
                {
                    "query": 'label_values(hotline_queue_calls_waiting{site=~"$site"}, queue)',
                    "refId": "queue",
                }
            )
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    return d


def base(uid: str, title: str, description: str, queue: bool = False) -> db.Dashboard:
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["hotline"])
        .refresh("10s")
        .time("now-6h", "now")
        .timezone("browser")
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    return variables(d, queue)


def wallboard() -> db.Dashboard:
    # the same colours for the ACD's rolling figures and the recording rules' daily ones
    asa_thresholds = green_red((None, "green"), (20, "orange"), (60, "red"))
    abandon_thresholds = green_red((None, "green"), (0.05, "orange"), (0.1, "red"))
    sl_thresholds = green_red((None, "red"), (0.6, "orange"), (0.8, "green"))
    d = base(
        "hotline-wallboard",
        "Hotline / Wallboard",
        "Per queue: callers waiting, longest wait, service level, ASA, abandons, agents by "
        "state. Formulas in each panel's description and in docs/deploy.md.",
        queue=True,
    )
    d = d.with_row(db.Row("Now"))
    d = d.with_panel(freshness("hotline-acd", "the ACD's queue gauges"))
    d = d.with_panel(
        stat_panel(
            "Calls waiting",
            "Callers in queue now: hotline_queue_calls_waiting, per queue.",
            f"sum by (queue) (hotline_queue_calls_waiting{{{SQ}}})",
            "none",
            "{{queue}}",
            green_red((None, "green"), (1, "orange"), (5, "red")),
            w=5,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Longest wait",
            "Wait of the oldest caller in queue now: "
            "max(hotline_queue_oldest_wait_seconds), per queue.",
            f"max by (queue) (hotline_queue_oldest_wait_seconds{{{SQ}}})",
            "s",
            "{{queue}}",
            green_red((None, "green"), (30, "orange"), (120, "red")),
            w=5,
            decimals=0,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Service level (ACD, 15 min)",
            "The ACD's own rolling figure: answered within 20 s / "
            "(answered + abandoned), calls that ended in the last 15 minutes "
            "(hotline_queue_service_level).",
            f"hotline_queue_service_level{{{SQ}}}",
            "percentunit",
            "{{queue}}",
            sl_thresholds,
            w=5,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Agents by state",
            "Agents of the site now by state: sum by (state) (hotline_agents). "
            "Staffed = ready + ringing + on_call + wrap_up.",
            f"sum by (state) (hotline_agents{{{SITE}}})",
            "none",
            "{{state}}",
            w=6,
        )
    )
    d = d.with_panel(
        stat_panel(
            "ASA (ACD, 15 min)",
            "The ACD's own rolling average speed of answer: total wait of the calls answered / "
            "calls answered, of the calls that left the queue in the last 15 minutes "
            "(hotline_queue_asa_seconds).",
            f"hotline_queue_asa_seconds{{{SQ}}}",
            "s",
            "{{queue}}",
            asa_thresholds,
            w=6,
            decimals=0,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Abandon rate (ACD, 15 min)",
            "The ACD's own rolling abandon rate: abandoned / (answered + abandoned), of the "
            "calls that left the queue in the last 15 minutes (hotline_queue_abandon_rate).",
            f"hotline_queue_abandon_rate{{{SQ}}}",
            "percentunit",
            "{{queue}}",
            abandon_thresholds,
            w=6,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Agents by state per queue",
            "Agents who serve each queue now, by state: hotline_queue_agents (an agent who "
            "serves several queues counts in each; logged-out agents left out).",
            f'sum by (queue, state) (hotline_queue_agents{{{SQ}, state!="logged_out"}})',
            "none",
            "{{queue}} {{state}}",
            w=12,
        )
    )
    d = d.with_row(db.Row("Today"))
    d = d.with_panel(
        stat_panel(
            "Service level today",
            "Answered within the queue's threshold / (answered + abandoned, "
            "if abandons count for the queue), since local midnight "
            "(hotline:queue_service_level:ratio_today).",
            f"hotline:queue_service_level:ratio_today{{{SQ}}}",
            "percentunit",
            "{{queue}}",
            sl_thresholds,
            w=6,
        )
    )
    d = d.with_panel(
        stat_panel(
            "ASA today",
            "Average speed of answer: total wait of answered calls / answered calls, "
            "since local midnight (hotline:queue_asa_seconds:_today).",
            f"hotline:queue_asa_seconds:_today{{{SQ}}}",
            "s",
            "{{queue}}",
            asa_thresholds,
            w=6,
            decimals=0,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Abandon rate today",
            "Abandoned / offered since local midnight (hotline:queue_abandon_rate:ratio_today).",
            f"hotline:queue_abandon_rate:ratio_today{{{SQ}}}",
            "percentunit",
            "{{queue}}",
            abandon_thresholds,
            w=6,
        )
    )
    d = d.with_panel(
        stat_panel(
            "AHT today",
            "Average handle time: (talk + hold + after-call work) / handled calls, "
            "since local midnight (hotline:queue_aht_seconds:_today).",
            f"hotline:queue_aht_seconds:_today{{{SQ}}}",
            "s",
            "{{queue}}",
            w=6,
            decimals=0,
        )
    )
    d = d.with_panel(
        table.Panel()
        .title("Contacts today")
        .description(
            "Offered, answered and abandoned since local midnight, per queue "
            "(hotline:queue_offered:increase_today, hotline:queue_answered:increase_today, "
            "hotline:queue_abandoned:increase_today: 1-minute increases of the ACD's counters "
            "summed over today's minutes)."
        )
        .datasource(DS)
        .span(12)
        .height(6)
        .with_target(
            query(
                f"round(hotline:queue_offered:increase_today{{{SQ}}})",
                "offered",
                instant=True,
                ref="A",
            ).format(pm.PromQueryFormat.TABLE)
        )
        .with_target(
            query(
                f"round(hotline:queue_answered:increase_today{{{SQ}}})",
                "answered",
                instant=True,
                ref="B",
            ).format(pm.PromQueryFormat.TABLE)
        )
        .with_target(
            query(
                f"round(hotline:queue_abandoned:increase_today{{{SQ}}})",
                "abandoned",
                instant=True,
                ref="C",
            ).format(pm.PromQueryFormat.TABLE)
        )
    )
    d = d.with_panel(
        stat_panel(
            "Occupancy today",
            "Agent time on call or in wrap-up / agent time staffed, since local "
            "midnight, per site (hotline:site_occupancy:ratio_today; the agent gauge has no queue).",
            f"hotline:site_occupancy:ratio_today{{{SITE}}}",
            "percentunit",
            "{{site}}",
            green_red((None, "orange"), (0.6, "green"), (0.9, "red")),
            w=12,
            h=6,
        )
    )
    d = d.with_row(db.Row("Trends"))
    d = d.with_panel(
        series_panel(
            "Service level: 5 min and 1 h",
            "Answered within threshold / (answered + w × abandoned) "
            "over 5 minutes and 1 hour (hotline:queue_service_level:ratio5m / ratio1h).",
            [
                query(f"hotline:queue_service_level:ratio5m{{{SQ}}}", "{{queue}} 5m"),
                query(f"hotline:queue_service_level:ratio1h{{{SQ}}}", "{{queue}} 1h"),
            ],
            "percentunit",
        )
    )
    d = d.with_panel(
        series_panel(
            "Waiting and longest wait",
            "Callers waiting (left) and the oldest wait in seconds "
            "(hotline_queue_calls_waiting, hotline_queue_oldest_wait_seconds).",
            [
                query(f"sum by (queue) (hotline_queue_calls_waiting{{{SQ}}})", "{{queue}} waiting"),
                query(
                    f"max by (queue) (hotline_queue_oldest_wait_seconds{{{SQ}}})",
                    "{{queue}} oldest s",
                ),
            ],
            "short",
        )
    )
    d = d.with_panel(
        series_panel(
            "ASA and abandon rate, 1 h",
            "ASA = wait of answered calls / answered calls; abandon rate "
            "= abandoned / offered; both over the last hour (hotline:queue_asa_seconds:1h, "
            "hotline:queue_abandon_rate:ratio1h × 100 as %).",
            [
                query(f"hotline:queue_asa_seconds:1h{{{SQ}}}", "{{queue}} ASA s"),
                query(f"100 * hotline:queue_abandon_rate:ratio1h{{{SQ}}}", "{{queue}} abandon %"),
            ],
            "short",
        )
    )
    d = d.with_panel(
        series_panel(
            "Handle time by phase, 1 h",
            "Average seconds per handled call in each phase over the last hour: "
            "increase(hotline_queue_handle_time_seconds_sum) by phase (talk, hold, wrap_up) / "
            'increase(hotline_queue_handle_time_seconds_count{phase="talk"}); stacked, the '
            "three together are the AHT (talk + hold + after-call work).",
            [
                query(
                    f"sum by (queue, phase) (increase(hotline_queue_handle_time_seconds_sum"
                    f"{{{SQ}}}[1h]))\n/ on(queue) group_left() sum by (queue) "
                    f"(increase(hotline_queue_handle_time_seconds_count{{{SQ}, "
                    f'phase="talk"}}[1h]))',
                    "{{queue}} {{phase}}",
                )
            ],
            "s",
            stack=True,
        )
    )
    d = d.with_panel(
        series_panel(
            "Contacts by outcome, 1 h",
            "Calls that left each queue in the last hour by outcome: answered, abandoned, "
            "short_abandoned (hung up within HOTLINE_SHORT_ABANDON_S): "
            "increase(hotline_queue_contacts_total[1h]).",
            [
                query(
                    f"sum by (queue, outcome) (increase(hotline_queue_contacts_total{{{SQ}}}[1h]))",
                    "{{queue}} {{outcome}}",
                )
            ],
            "short",
        )
    )
    d = d.with_panel(
        series_panel(
            "Agents by state",
            "sum by (state) (hotline_agents), stacked.",
            [query(f"sum by (state) (hotline_agents{{{SITE}}})", "{{state}}")],
            "short",
            stack=True,
        )
    )
    return d


def gateway() -> db.Dashboard:
    job = f'job="hotline-gateway", {SITE}'
    d = base(
        "hotline-gateway",
        "Hotline / Gateway",
        "Calls, SIP, RTP media quality and analog lines of the site's gateway.",
    )
    d = d.with_panel(freshness("hotline-gateway", "the gateway's metrics"))
    d = d.with_panel(
        stat_panel(
            "Active calls",
            "Live calls now: sum(hotline_active_calls) over states offered, answered, bridged.",
            f"sum(hotline_active_calls{{{SITE}}})",
            "none",
            w=4,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Registered phones",
            "Extensions with a live registration: hotline_sip_registrations.",
            f"sum(hotline_sip_registrations{{{job}}})",
            "none",
            w=4,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Draining",
            "1 while the gateway refuses new calls and waits for live ones to end "
            "(hotline_gateway_draining; the drain contract in docs/deploy.md).",
            f"max(hotline_gateway_draining{{{SITE}}})",
            "none",
            thresholds=green_red((None, "green"), (1, "orange")),
            w=3,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Recording failures, 1 h",
            "Recordings the gateway's tap could not deliver in the last "
            "hour: increase(hotline_gateway_recording_failures_total[1h]) (0 when none).",
            f"sum(increase(hotline_gateway_recording_failures_total{{{job}}}[1h])) or vector(0)",
            "none",
            thresholds=green_red((None, "green"), (1, "red")),
            w=4,
            decimals=0,
        )
    )
    d = d.with_panel(
        series_panel(
            "Active calls by state",
            "sum by (state) (hotline_active_calls).",
            [query(f"sum by (state) (hotline_active_calls{{{SITE}}})", "{{state}}")],
            "short",
            stack=True,
        )
    )
    d = d.with_panel(
        series_panel(
            "Calls per second",
            'New calls: rate(hotline_sip_requests_total{method="INVITE"}); '
            "ended calls by reason: rate(hotline_gateway_calls_total).",
            [
                query(
                    f'sum(rate(hotline_sip_requests_total{{method="INVITE", {job}}}[{RATE}]))',
                    "INVITEs/s",
                ),
                query(
                    f"sum by (reason) (rate(hotline_gateway_calls_total{{{SITE}}}[{RATE}]))",
                    "ended {{reason}}",
                ),
            ],
            "reqps",
        )
    )
    d = d.with_panel(
        series_panel(
            "SIP requests by method",
            "rate(hotline_sip_requests_total) by method.",
            [
                query(
                    f"sum by (method) (rate(hotline_sip_requests_total{{{job}}}[{RATE}]))",
                    "{{method}}",
                )
            ],
            "reqps",
        )
    )
    d = d.with_panel(
        series_panel(
            "SIP refusals by status",
            "INVITEs the gateway refused, by status: "
            "rate(hotline_gateway_rejected_total) (0 when none).",
            [
                query(
                    f"sum by (status) (rate(hotline_gateway_rejected_total{{{SITE}}}[{RATE}])) "
                    f"or vector(0)",
                    "{{status}}",
                )
            ],
            "reqps",
        )
    )
    d = d.with_panel(
        series_panel(
            "Capacity",
            "New calls the gateway can still take (hotline_gateway_calls_possible: free RTP "
            "ports per bridged call, within its ceiling) against the most it takes "
            "(hotline_gateway_calls_max); HotlineGatewayNearCapacity under a fifth.",
            [
                query(f"sum(hotline_gateway_calls_possible{{{SITE}}})", "calls possible"),
                query(f"sum(hotline_gateway_calls_max{{{SITE}}})", "calls max"),
                query(f'sum(hotline_rtp_ports{{state="in_use", {SITE}}})', "RTP ports in use"),
            ],
            "short",
            w=8,
        )
    )
    d = d.with_panel(
        series_panel(
            "New calls refused by limit",
            "503s given to new calls by admission, by limit: "
            "rate(hotline_sip_admission_refused_total) (0 when none). gateway_* and trunk_* are "
            "capacity, answer_delay the platform behind the gateway, source_* one caller's "
            "flood; HotlineGatewayRefusingCalls.",
            [
                query(
                    f"sum by (limit) (rate(hotline_sip_admission_refused_total{{{job}}}[{RATE}])) "
                    f"or vector(0)",
                    "{{limit}}",
                )
            ],
            "reqps",
            w=8,
        )
    )
    d = d.with_panel(
        series_panel(
            "Media clock lateness",
            "How late the 20 ms media clock fires (p50, p99 of "
            "hotline_media_tick_lateness_seconds): the jitter the gateway adds to every frame "
            "it sends; and frames skipped after a stall (rate(hotline_media_skipped_frames_total), "
            "a frame = 20 ms). HotlineGatewayMediaLate over 5 ms p99.",
            [
                query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(hotline_media_tick_lateness_seconds_bucket{{{SITE}}}[{RATE}])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.99)
            ]
            + [
                query(
                    f"sum(rate(hotline_media_skipped_frames_total{{{SITE}}}[{RATE}])) * 0.02",
                    "skipped (s of audio per s)",
                )
            ],
            "s",
            w=8,
        )
    )
    d = d.with_panel(
        series_panel(
            "SIP responses by code",
            "Every SIP response sent and received, by code: rate(hotline_sip_responses_total).",
            [
                query(
                    f"sum by (code) (rate(hotline_sip_responses_total{{{SITE}}}[{RATE}]))",
                    "{{code}}",
                )
            ],
            "reqps",
        )
    )
    d = d.with_panel(
        series_panel(
            "Registrations",
            "REGISTER outcomes per second: rate(hotline_sip_register_total) by result.",
            [
                query(
                    f"sum by (result) (rate(hotline_sip_register_total{{{job}}}[{RATE}]))",
                    "{{result}}",
                )
            ],
            "reqps",
        )
    )
    d = d.with_panel(
        series_panel(
            "RTP packet loss",
            "Lost / expected RTP packets per leg kind: "
            "rate(hotline_rtp_packets_lost_total) / rate(hotline_rtp_packets_expected_total).",
            [
                query(
                    f"sum by (leg) (rate(hotline_rtp_packets_lost_total{{{SITE}}}[{RATE}])) / "
                    f"sum by (leg) (rate(hotline_rtp_packets_expected_total{{{SITE}}}[{RATE}]))",
                    "{{leg}}",
                )
            ],
            "percentunit",
            w=8,
        )
    )
    d = d.with_panel(
        series_panel(
            "RTP jitter (p95)",
            "95th percentile interarrival jitter (RFC 3550) per leg kind: "
            "histogram_quantile(0.95, rate(hotline_rtp_jitter_seconds_bucket)).",
            [
                query(
                    f"histogram_quantile(0.95, sum by (leg, le) "
                    f"(rate(hotline_rtp_jitter_seconds_bucket{{{SITE}}}[{RATE}])))",
                    "{{leg}}",
                )
            ],
            "s",
            w=8,
        )
    )
    d = d.with_panel(
        series_panel(
            "MOS estimate by leg (p10)",
            "The MOS estimate (E-model from loss, jitter and codec) "
            "that 90% of calls beat, per leg kind: histogram_quantile(0.1, "
            "rate(hotline_rtp_mos_bucket)).",
            [
                query(
                    f"histogram_quantile(0.1, sum by (leg, le) "
                    f"(rate(hotline_rtp_mos_bucket{{{SITE}}}[{RATE}])))",
                    "{{leg}}",
                )
            ],
            "none",
            w=8,
        )
    )
    d = d.with_panel(
        table.Panel()
        .title("MOS estimate per seat (last call)")
        .description(
            "Each seat's MOS estimate of its last call: hotline_seat_mos by seat; under 3.6 "
            "means the agent's network needs a look."
        )
        .datasource(DS)
        .span(12)
        .height(8)
        .with_target(
            query(f"hotline_seat_mos{{{SITE}}}", "{{seat}}", instant=True).format(
                pm.PromQueryFormat.TABLE
            )
        )
    )
    d = d.with_panel(
        series_panel(
            "Analog lines by state",
            "hotline_analog_lines by state (idle, ringing, in_use, out_of_service).",
            [query(f"sum by (state) (hotline_analog_lines{{{SITE}}})", "{{state}}")],
            "short",
            stack=True,
        )
    )
    d = d.with_panel(
        series_panel(
            "DTMF and caller-ID detections",
            "In-band detections on analog lines per second by "
            "kind: rate(hotline_analog_dsp_detections_total).",
            [
                query(
                    f"sum by (kind) (rate(hotline_analog_dsp_detections_total{{{job}}}[{RATE}]))",
                    "{{kind}}",
                )
            ],
            "ops",
        )
    )
    return d


def platform() -> db.Dashboard:
    all_jobs = "hotline-(gateway|acd|ivr|crm|recorder)"
    jobs = f'job=~"{all_jobs}", {SITE}'
    d = base(
        "hotline-platform",
        "Hotline / Platform",
        "Service health, gRPC, Kafka, databases, CPU and memory of the five services.",
    )
    d = d.with_panel(freshness(all_jobs, "the five services' metrics"))
    d = d.with_panel(
        stat_panel(
            "Services up",
            "Scrape targets answering: sum(up) of the five services' jobs, out of count(up).",
            f"sum(up{{{jobs}}})",
            "none",
            w=4,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Readiness",
            "Services reporting ready (hotline_ready: 1 ready, 0 not; /readyz says why).",
            f"min by (job) (hotline_ready{{{jobs}}})",
            "none",
            "{{job}}",
            green_red((None, "red"), (1, "green")),
            w=8,
        )
    )
    d = d.with_panel(
        series_panel(
            "Up by service",
            "Scrape success per target: up by job and instance (1 = scraped, 0 = down).",
            [query(f"up{{{jobs}}}", "{{job}} {{instance}}")],
            "short",
        )
    )
    d = d.with_panel(
        series_panel(
            "gRPC latency (p95) by method",
            "histogram_quantile(0.95, "
            "rate(hotline_grpc_server_handling_seconds_bucket)) by service and method.",
            [
                query(
                    f"histogram_quantile(0.95, sum by (job, method, le) "
                    f"(rate(hotline_grpc_server_handling_seconds_bucket{{{jobs}}}[{RATE}])))",
                    "{{job}} {{method}}",
                )
            ],
            "s",
        )
    )
    d = d.with_panel(
        series_panel(
            "gRPC errors by code",
            "Calls that ended with a status other than OK: "
            'rate(hotline_grpc_server_handled_total{code!="OK"}); a flat 0 per service when '
            "there are none.",
            [
                query(
                    f'sum by (job, code) (rate(hotline_grpc_server_handled_total{{code!="OK", '
                    f"{jobs}}}[{RATE}])) or "
                    f"sum by (job) (rate(hotline_grpc_server_handled_total{{{jobs}}}[{RATE}])) * 0",
                    "{{job}} {{code}}",
                )
            ],
            "reqps",
        )
    )
    d = d.with_panel(
        series_panel(
            "Events published",
            "Kafka events out per second, by type: rate(hotline_events_published_total).",
            [
                query(
                    f"sum by (type) (rate(hotline_events_published_total{{{jobs}}}[{RATE}]))",
                    "{{type}}",
                )
            ],
            "ops",
        )
    )
    d = d.with_panel(
        series_panel(
            "Events consumed",
            "Kafka events handled per second by consumer group; failed and "
            "duplicate events: rate(hotline_events_consumed_total), "
            "rate(hotline_events_failed_total), rate(hotline_events_duplicates_total).",
            [
                query(
                    f"sum by (group) (rate(hotline_events_consumed_total{{{jobs}}}[{RATE}]))",
                    "{{group}}",
                ),
                query(
                    f"sum(rate(hotline_events_failed_total{{{jobs}}}[{RATE}])) or vector(0)",
                    "failed",
                ),
                query(
                    f"sum(rate(hotline_events_duplicates_total{{{jobs}}}[{RATE}])) or vector(0)",
                    "duplicates",
                ),
            ],
            "ops",
        )
    )
    d = d.with_panel(
        series_panel(
            "Kafka consumer lag",
            "Events not yet handled per consumer group and topic: hotline_kafka_consumer_lag.",
            [
                query(
                    f"sum by (group, topic) (hotline_kafka_consumer_lag{{{SITE}}})",
                    "{{group}} {{topic}}",
                )
            ],
            "short",
        )
    )
    d = d.with_panel(
        series_panel(
            "Database latency (p95)",
            "histogram_quantile(0.95, rate(hotline_db_query_seconds_bucket)) "
            "for the CRM and the recorder.",
            [
                query(
                    f"histogram_quantile(0.95, sum by (job, le) "
                    f"(rate(hotline_db_query_seconds_bucket{{{jobs}}}[{RATE}])))",
                    "{{job}}",
                )
            ],
            "s",
        )
    )
    d = d.with_panel(
        series_panel(
            "CPU",
            "CPU seconds per second per process: rate(process_cpu_seconds_total).",
            [query(f"rate(process_cpu_seconds_total{{{jobs}}}[{RATE}])", "{{job}}")],
            "percentunit",
        )
    )
    d = d.with_panel(
        series_panel(
            "Garbage collector pauses (p99)",
            "How long a process stood still in a cyclic garbage collection: "
            "histogram_quantile(0.99, rate(hotline_gc_pause_seconds_bucket)); a spike in "
            "call-setup latency beside one here is the collector.",
            [
                query(
                    f"histogram_quantile(0.99, sum by (job, le) "
                    f"(rate(hotline_gc_pause_seconds_bucket{{{jobs}}}[{RATE}])))",
                    "{{job}}",
                )
            ],
            "s",
        )
    )
    d = d.with_panel(
        series_panel(
            "Memory",
            "Resident memory per process: process_resident_memory_bytes.",
            [query(f"process_resident_memory_bytes{{{jobs}}}", "{{job}}")],
            "bytes",
        )
    )
    d = d.with_panel(
        series_panel(
            "Desk and CDRs",
            "Browsers on the desk websocket (hotline_crm_ws_clients) and CDR rows "
            "written per second (rate(hotline_crm_cdrs_written_total)).",
            [
                query(f"sum(hotline_crm_ws_clients{{{SITE}}})", "desk websockets"),
                query(
                    f"sum(rate(hotline_crm_cdrs_written_total{{{SITE}}}[{RATE}]))", "CDR writes/s"
                ),
            ],
            "short",
        )
    )
    d = d.with_panel(
        series_panel(
            "Recorder",
            "Streams being written (hotline_recorder_active_streams), recordings stored "
            "per second by status (rate(hotline_recordings_total)), failures "
            "(rate(hotline_recording_failures_total), 0 when none).",
            [
                query(f"sum(hotline_recorder_active_streams{{{SITE}}})", "streams"),
                query(
                    f"sum by (status) (rate(hotline_recordings_total{{{SITE}}}[{RATE}]))",
                    "stored {{status}}",
                ),
                query(
                    f"sum(rate(hotline_recording_failures_total{{{SITE}}}[{RATE}])) or vector(0)",
                    "failures",
                ),
            ],
            "short",
        )
    )
    d = d.with_panel(
        series_panel(
            "IVR calls by outcome",
            "Calls taken by a flow per second, by flow and outcome: rate(hotline_ivr_calls_total).",
            [
                query(
                    f"sum by (flow, outcome) (rate(hotline_ivr_calls_total{{{SITE}}}[{RATE}]))",
                    "{{flow}} {{outcome}}",
                )
            ],
            "ops",
        )
    )
    return d


DASHBOARDS = {"wallboard": wallboard, "gateway": gateway, "platform": platform}


def render(name: str) -> str:
    built = DASHBOARDS[name]().build()
    return json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> int:
    stale = []
    for name in DASHBOARDS:
        path = OUT / f"{name}.json"
        text = render(name)
        if "--check" in sys.argv[1:]:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(path)
    if stale:
        print(
            f"stale: {', '.join(stale)}: run .venv/bin/python deploy/dashboards.py", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
