"""Writes charts/hotline/rules/hotline.rules.yaml: Hotline's recording rules and alerts.

The file is what the chart's PrometheusRule carries (templates/monitoring.yaml adds a generated
group of per-queue settings that these rules join on: service-level threshold and target,
whether abandons count, alert thresholds, the site's UTC offset, whether a card is configured).
It is generated because the KPIs repeat over windows; `promtool check rules` and
`promtool test rules` check the generated file (tests/deploy/test_rules.py), and a test checks
that regenerating gives the same bytes.

    .venv/bin/python deploy/rules.py          # rewrite the file
    .venv/bin/python deploy/rules.py --check  # exit 1 if it is stale

Formulas (docs/deploy.md, "Queue KPIs"):
  service level = answered within threshold / (answered + w * abandoned), w = 1 when abandons
                  count (monitoring.serviceLevel.countAbandoned), per queue threshold and target
  ASA           = total wait of answered calls / answered calls
  AHT           = (talk + hold + after-call work) / handled calls
  abandon rate  = abandoned / offered
  occupancy     = agent time on call or in wrap-up / agent time staffed (ready, ringing, on call,
                  wrap-up), per site (hotline_agents; an agent serving several queues would
                  count in each of hotline_queue_agents)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "charts" / "hotline" / "rules" / "hotline.rules.yaml"
#: replaced by the chart with monitoring.runbookUrl
RUNBOOK = "https://hotline.invalid/runbook.md"

WINDOWS = ("5m", "30m", "1h", "6h")
STAFFED = 'state=~"ready|ringing|on_call|wrap_up"'
BUSY = 'state=~"on_call|wrap_up"'
#: the steps of "today": minutes since the site's local midnight (hotline:today_minute)
#: a step's minute m (1..1440 - each covers the minute before it) is today's when 1 <= m <= now's
TODAY = "and on(site) (hotline:today_minute >= 1 <= on(site) (hotline:today_minute @ end()))"


class Literal(str):
    """A multi-line PromQL expression, written as a YAML block."""


def _literal(dumper: yaml.Dumper, data: Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.add_representer(Literal, _literal)


def rec(name: str, expr: str) -> dict:
    expr = expr.strip()
    return {"record": name, "expr": Literal(expr + "\n") if "\n" in expr else expr}


def counter_increases(window: str) -> list[dict]:
    """Offered, answered, abandoned, answered within threshold, wait sum/count over a window."""
    out = []
    for kpi, metric in (
        ("offered", "hotline_queue_offered_total"),
        ("answered", "hotline_queue_answered_total"),
        ("abandoned", "hotline_queue_abandoned_total"),
        ("wait_seconds_sum", "hotline_queue_answer_wait_seconds_sum"),
        ("wait_seconds_count", "hotline_queue_answer_wait_seconds_count"),
        ("handle_seconds_sum", "hotline_queue_handle_time_seconds_sum"),
        ("handled", 'hotline_queue_handle_time_seconds_count{phase="talk"}'),
    ):
        out.append(
            rec(
                f"hotline:queue_{kpi}:increase{window}",
                f"sum by (site, queue) (increase({_range(metric, window)}))",
            )
        )
    out.append(
        rec(
            f"hotline:queue_answered_within_threshold:increase{window}",
            f"""
sum by (site, queue) (
  increase(hotline_queue_answer_wait_seconds_bucket[{window}])
  and on(site, queue, le) hotline:queue_service_level_threshold_seconds
)""",
        )
    )
    return out


def _range(metric: str, window: str) -> str:
    return f"{metric}[{window}]"


def ratios(window: str) -> list[dict]:
    """Service level, ASA, AHT, abandon rate from the increases of the same window."""
    w = window
    zero = f"on(site, queue) (hotline:queue_offered:increase{w} * 0)"
    return [
        rec(
            f"hotline:queue_service_level:ratio{w}",
            f"""
(hotline:queue_answered_within_threshold:increase{w} or {zero})
/ on(site, queue)
(
  (hotline:queue_answered:increase{w} or {zero})
  + on(site, queue)
  (
    (hotline:queue_abandoned:increase{w} * on(site, queue) hotline:queue_service_level_abandon_weight)
    or {zero}
  )
)""",
        ),
        rec(
            f"hotline:queue_asa_seconds:{w}",
            f"hotline:queue_wait_seconds_sum:increase{w}\n"
            f"/ on(site, queue) hotline:queue_wait_seconds_count:increase{w}",
        ),
        rec(
            f"hotline:queue_aht_seconds:{w}",
            f"hotline:queue_handle_seconds_sum:increase{w}\n"
            f"/ on(site, queue) hotline:queue_handled:increase{w}",
        ),
        rec(
            f"hotline:queue_abandon_rate:ratio{w}",
            f"""
(hotline:queue_abandoned:increase{w} or {zero})
/ on(site, queue) hotline:queue_offered:increase{w}""",
        ),
    ]


def occupancy(window: str) -> dict:
    return rec(
        f"hotline:site_occupancy:ratio{window}",
        f"""
sum by (site) (avg_over_time(hotline_agents{{{BUSY}}}[{window}]))
/ on(site) sum by (site) (avg_over_time(hotline_agents{{{STAFFED}}}[{window}]))""",
    )


def today_rules() -> list[dict]:
    """Since the site's local midnight: 1-minute increases summed over today's minutes."""
    rules = [
        rec(
            "hotline:today_minute",
            "floor((((time() + hotline:today_utc_offset_seconds) % 86400 + 86400) % 86400) / 60)",
        )
    ]
    for kpi, metric in (
        ("offered", "hotline_queue_offered_total"),
        ("answered", "hotline_queue_answered_total"),
        ("abandoned", "hotline_queue_abandoned_total"),
        ("wait_seconds_sum", "hotline_queue_answer_wait_seconds_sum"),
        ("wait_seconds_count", "hotline_queue_answer_wait_seconds_count"),
        ("handle_seconds_sum", "hotline_queue_handle_time_seconds_sum"),
        ("handled", 'hotline_queue_handle_time_seconds_count{phase="talk"}'),
    ):
        rules.append(
            rec(
                f"hotline:queue_{kpi}:increase_today",
                f"""
sum by (site, queue) (
  sum_over_time(
    (sum by (site, queue) (increase({metric}[1m])) {TODAY})[1439m:1m]
  )
)""",
            )
        )
    rules.append(
        rec(
            "hotline:queue_answered_within_threshold:increase_today",
            f"""
sum by (site, queue) (
  sum_over_time(
    (
      sum by (site, queue) (
        increase(hotline_queue_answer_wait_seconds_bucket[1m])
        and on(site, queue, le) hotline:queue_service_level_threshold_seconds
      )
      {TODAY}
    )[1439m:1m]
  )
)""",
        )
    )
    rules += ratios("_today")
    rules.append(
        rec(
            "hotline:site_occupancy:ratio_today",
            f"""
sum by (site) (sum_over_time((sum by (site) (hotline_agents{{{BUSY}}}) {TODAY})[1439m:1m]))
/ on(site)
sum by (site) (sum_over_time((sum by (site) (hotline_agents{{{STAFFED}}}) {TODAY})[1439m:1m]))""",
        )
    )
    return rules


def alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict:
    expr = expr.strip()
    return {
        "alert": name,
        "expr": Literal(expr + "\n") if "\n" in expr else expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK}#{name.lower()}",
        },
    }


def burn(window: str) -> str:
    return (
        f"(1 - hotline:queue_service_level:ratio{window})\n"
        f"  / on(site, queue) (1 - hotline:queue_service_level_target)"
    )


ALERTS = [
    alert(
        "HotlineServiceLevelBurnFast",
        f"""
(
  {burn("1h")} > 2
and on(site, queue)
  {burn("5m")} > 2
)
and on(site, queue) hotline:queue_offered:increase1h >= 10""",
        "2m",
        "page",
        "Queue {{ $labels.queue }} at {{ $labels.site }} is far below its service level",
        "Over the last hour and the last 5 minutes, queue {{ $labels.queue }} at site "
        "{{ $labels.site }} missed its service-level target at more than twice the "
        "allowed rate: callers wait longer than the threshold and hang up.",
    ),
    alert(
        "HotlineServiceLevelBurnSlow",
        f"""
(
  {burn("6h")} > 1
and on(site, queue)
  {burn("30m")} > 1
)
and on(site, queue) hotline:queue_offered:increase6h >= 30""",
        "15m",
        "ticket",
        "Queue {{ $labels.queue }} at {{ $labels.site }} is below its service level for hours",
        "Over the last 6 hours and the last 30 minutes, queue {{ $labels.queue }} at site "
        "{{ $labels.site }} stayed under its service-level target: staffing or routing "
        "does not match demand.",
    ),
    alert(
        "HotlineQueueOldestWaitHigh",
        """
max by (site, queue) (hotline_queue_oldest_wait_seconds)
> on(site, queue) hotline:queue_oldest_wait_alert_seconds""",
        "1m",
        "page",
        "A caller has waited too long in {{ $labels.queue }} at {{ $labels.site }}",
        "The oldest call waiting in queue {{ $labels.queue }} at site {{ $labels.site }} "
        "has waited longer than the queue's alert threshold.",
    ),
    alert(
        "HotlineCallsWaitingNoAgent",
        f"""
sum by (site, queue) (hotline_queue_calls_waiting) > 0
unless on(site, queue) (sum by (site, queue) (hotline_queue_agents{{{STAFFED}}}) > 0)""",
        "1m",
        "page",
        "Callers wait in {{ $labels.queue }} at {{ $labels.site }} and no agent is staffed",
        "Calls are waiting in queue {{ $labels.queue }} at site {{ $labels.site }} while no "
        "agent who serves that queue is ready, ringing, on a call or in wrap-up: nobody will "
        "answer them.",
    ),
    alert(
        "HotlineAfterCallWorkLong",
        """
(
  sum by (site, queue) (increase(hotline_queue_handle_time_seconds_sum{phase="wrap_up"}[1h]))
  / on(site, queue)
  sum by (site, queue) (increase(hotline_queue_handle_time_seconds_count{phase="wrap_up"}[1h]))
) > 60
and on(site, queue)
sum by (site, queue) (increase(hotline_queue_handle_time_seconds_count{phase="wrap_up"}[1h])) >= 5""",
        "15m",
        "ticket",
        "After-call work in {{ $labels.queue }} at {{ $labels.site }} takes over a minute",
        "Over the last hour agents of queue {{ $labels.queue }} at site {{ $labels.site }} "
        "spent more than 60 s on average in wrap-up after a call (the service standard is at "
        "most 1 minute): the wrap-up timer is set too long, or the disposition form holds "
        "them up, and callers wait meanwhile.",
    ),
    alert(
        "HotlineAbandonRateHigh",
        """
hotline:queue_abandon_rate:ratio1h > on(site, queue) hotline:queue_abandon_rate_alert
and on(site, queue) hotline:queue_offered:increase1h >= 10""",
        "5m",
        "ticket",
        "Many callers hang up in {{ $labels.queue }} at {{ $labels.site }}",
        "Over the last hour more callers abandoned queue {{ $labels.queue }} at site "
        "{{ $labels.site }} than the queue's alert threshold allows.",
    ),
    alert(
        "HotlineServiceDown",
        """
up{job=~"hotline-(gateway|acd|ivr|crm|recorder)"} == 0""",
        "1m",
        "page",
        "{{ $labels.job }} at {{ $labels.site }} cannot be scraped",
        "Prometheus cannot scrape {{ $labels.job }} ({{ $labels.instance }}) at site "
        "{{ $labels.site }}: the process is down, crash-looping or unreachable.",
    ),
    alert(
        "HotlineServiceNotReady",
        """
max by (site, job, instance) (hotline_ready) == 0
or
max by (namespace, deployment) (
  kube_deployment_status_replicas_unavailable{deployment=~".+-(gateway|acd|ivr|crm|recorder)"}
) > 0""",
        "3m",
        "page",
        "A Hotline service is not ready",
        "{{ $labels.job }}{{ $labels.deployment }} {{ $labels.instance }} reports not ready "
        "(its /readyz names the dependency) or its Deployment has unavailable replicas.",
    ),
    alert(
        "HotlineGatewayNotOnCardNode",
        """
hotline:gateway_card_configured == 1
unless on(site) (sum by (site) (hotline_analog_lines{state!="out_of_service"}) > 0)""",
        "5m",
        "page",
        "The gateway at {{ $labels.site }} is not serving its analog card",
        "An analog card is configured for site {{ $labels.site }} but no gateway reports "
        "a working analog line: the gateway is not running on the card node, cannot open "
        "the DAHDI devices, or is down. The outside lines are not answered.",
    ),
    alert(
        "HotlineAnalogLineAlarm",
        """
sum by (site) (hotline_analog_lines{state="out_of_service"}) > 0
or
sum by (site) (hotline_analog_span_alarm) > 0""",
        "2m",
        "page",
        "An analog line or span at {{ $labels.site }} is in alarm",
        "At site {{ $labels.site }} an analog line is out of service or a span reports an "
        "alarm: calls on that line are not received.",
    ),
    alert(
        "HotlineGatewayDrainTooLong",
        """
max by (site) (hotline_gateway_draining) == 1""",
        "15m",
        "ticket",
        "The gateway at {{ $labels.site }} has been draining for 15 minutes",
        "The gateway at site {{ $labels.site }} refuses new calls (draining) for longer than "
        "any allowed drainSeconds: it is stuck, or a drain was started by hand and "
        "forgotten.",
    ),
    alert(
        "HotlineSipErrorRate",
        """
(
  sum by (site) (rate(hotline_gateway_rejected_total{status=~"[45].."}[5m]))
  / on(site) sum by (site) (rate(hotline_sip_requests_total{method="INVITE"}[5m]))
) > 0.2
and on(site) sum by (site) (rate(hotline_sip_requests_total{method="INVITE"}[5m])) > 0.01""",
        "5m",
        "ticket",
        "Many SIP calls at {{ $labels.site }} are refused",
        "More than 20% of the INVITEs the gateway at site {{ $labels.site }} received in the "
        "last 5 minutes were answered with a 4xx/5xx.",
    ),
    alert(
        "HotlineKafkaConsumerLagGrowing",
        """
sum by (site, group) (hotline_kafka_consumer_lag) > 100
and on(site, group) sum by (site, group) (deriv(hotline_kafka_consumer_lag[10m])) > 0""",
        "10m",
        "page",
        "Consumer group {{ $labels.group }} at {{ $labels.site }} falls behind",
        "The Kafka consumer group {{ $labels.group }} at site {{ $labels.site }} has more "
        "than 100 events unhandled and the backlog keeps growing: screens, KPIs or CDRs "
        "are late.",
    ),
    alert(
        "HotlineRecordingFailures",
        """
sum by (site) (
  increase({__name__=~"hotline_recording_failures_total|hotline_gateway_recording_failures_total"}[10m])
) > 0""",
        "0m",
        "page",
        "Recordings at {{ $labels.site }} are failing",
        "In the last 10 minutes the recorder or the gateway's recording tap at site "
        "{{ $labels.site }} lost or cut short a recording.",
    ),
    alert(
        "HotlineIvrTurnsCallersAway",
        """
sum by (site) (
  increase(hotline_ivr_calls_total{outcome=~"acd-refused|acd-unavailable|error"}[10m])
) > 0""",
        "0m",
        "page",
        "The IVR at {{ $labels.site }} turns callers away",
        "In the last 10 minutes the IVR at site {{ $labels.site }} ended calls it could not hand "
        "to the ACD (unreachable, or refusing: a flow naming a queue the ACD does not have) or "
        "failed a flow.",
    ),
    alert(
        "HotlineIvrPromptMissing",
        "sum by (site, flow, prompt) (increase(hotline_ivr_prompts_missing_total[10m])) > 0",
        "0m",
        "ticket",
        "Flow {{ $labels.flow }} at {{ $labels.site }} names a missing prompt",
        "In the last 10 minutes the IVR at site {{ $labels.site }} skipped prompt "
        "{{ $labels.prompt }} of flow {{ $labels.flow }}: the gateway does not have it. Callers "
        "still reach a queue, after silence where the prompt should be.",
    ),
    alert(
        "HotlineIvrFlowsTakenOver",
        'sum by (site) (increase(hotline_ivr_calls_total{outcome="taken-over"}[10m])) > 0',
        "0m",
        "ticket",
        "An IVR at {{ $labels.site }} stalled long enough to lose its callers",
        "In the last 10 minutes an IVR at site {{ $labels.site }} was silent to the gateway for "
        "longer than its owner timeout while it ran flows (a stalled event loop, CPU "
        "starvation, a partition): another IVR took its callers over, who heard their menu "
        "start again, and the stalled IVR's flows were stopped when it woke up.",
    ),
    alert(
        "HotlineBrokerLostEvents",
        "sum by (site, source) (increase(hotline_events_republished_total[10m])) > 0",
        "0m",
        "ticket",
        "The event broker at {{ $labels.site }} lost events it had acknowledged",
        "In the last 10 minutes the {{ $labels.source }} at site {{ $labels.site }} published "
        "again events the broker had acknowledged and then lost: the broker came back without "
        "its log. The recent events were restored; the history before them is gone from the "
        "broker (the CRM keeps its CDRs).",
    ),
    alert(
        "HotlineRecordingsWaitingAtGateway",
        "max by (site) (hotline_gateway_recording_spool_oldest_seconds) > 900",
        "5m",
        "ticket",
        "Recordings at {{ $labels.site }} are not reaching the recorder",
        "A recording has waited more than 15 minutes in the gateway's spool at site "
        "{{ $labels.site }}: the recorder is down, unreachable from the gateway, or refusing "
        "uploads. Nothing is lost yet, but the recordings cannot be played and the spool grows.",
    ),
    alert(
        "HotlineGatewayRefusingCalls",
        """
sum by (site, limit) (
  increase(hotline_sip_admission_refused_total{limit=~"gateway_calls|gateway_rate|trunk_calls|trunk_rate|answer_delay"}[5m])
) > 5""",
        "5m",
        "page",
        "The gateway at {{ $labels.site }} turns callers away ({{ $labels.limit }})",
        "For 5 minutes the gateway at site {{ $labels.site }} has answered more than 5 new "
        "calls in every 5 minutes with 503 "
        "because of its {{ $labels.limit }} limit: the site takes more calls than it was sized "
        "for (gateway_calls, gateway_rate: the gateway's ceiling; trunk_calls, trunk_rate: a "
        "trunk's; answer_delay: the IVR and the services behind it answer late). Callers hear "
        "busy and the carrier retries.",
    ),
    alert(
        "HotlineGatewayNearCapacity",
        """
max by (site) (hotline_gateway_calls_possible)
  < 0.2 * max by (site) (hotline_gateway_calls_max)""",
        "15m",
        "ticket",
        "The gateway at {{ $labels.site }} runs near its capacity",
        "For 15 minutes the gateway at site {{ $labels.site }} could take fewer than a fifth "
        "of its most concurrent calls more (hotline_gateway_calls_possible against "
        "hotline_gateway_calls_max): a busier hour will find it full and callers will be "
        "refused.",
    ),
    alert(
        "HotlineGatewayMediaLate",
        """
histogram_quantile(0.99,
  sum by (site, le) (rate(hotline_media_tick_lateness_seconds_bucket[10m]))
) > 0.005
or
sum by (site) (increase(hotline_media_skipped_frames_total[10m])) > 50""",
        "10m",
        "ticket",
        "The gateway at {{ $labels.site }} sends audio late",
        "For 10 minutes the gateway at site {{ $labels.site }} has sent 1 frame in 100 more "
        "than 5 ms late, or skipped more than a second of audio, because its event loop "
        "is starved of CPU: every bridged call hears the added jitter or gaps.",
    ),
    alert(
        "HotlinePoorMediaQuality",
        """
histogram_quantile(0.1, sum by (site, le) (rate(hotline_rtp_mos_bucket[10m]))) < 3.6
or
(
  sum by (site) (rate(hotline_rtp_packets_lost_total[10m]))
  / on(site) sum by (site) (rate(hotline_rtp_packets_expected_total[10m]))
) > 0.02
or
histogram_quantile(0.95, sum by (site, le) (rate(hotline_rtp_jitter_seconds_bucket[10m]))) > 0.05""",
        "10m",
        "ticket",
        "Call audio at {{ $labels.site }} is poor",
        "At site {{ $labels.site }} over the last 10 minutes one call in ten scored a MOS "
        "estimate under 3.6, or more than 2% of RTP packets were lost, or the 95th "
        "percentile jitter exceeded 50 ms.",
    ),
]


def document() -> dict:
    kpis = []
    for w in WINDOWS:
        kpis += counter_increases(w)
        kpis += ratios(w)
        kpis.append(occupancy(w))
    return {
        "groups": [
            {"name": "hotline-queue-kpis", "interval": "30s", "rules": kpis},
            {"name": "hotline-queue-kpis-today", "interval": "1m", "rules": today_rules()},
            {"name": "hotline-alerts", "interval": "30s", "rules": ALERTS},
        ]
    }


HEADER = """\
# GENERATED by deploy/rules.py - edit that file and run it; tests check this file is current.
# Recording rules (per queue: service level, ASA, AHT, abandon rate over 5m/30m/1h/6h/today;
# occupancy per site) and the alerts an SRE pages on. Joins on the per-queue settings group the
# chart generates (templates/_helpers.tpl, "hotline.rules").
"""


def render() -> str:
    return HEADER + yaml.dump(document(), sort_keys=False, width=100, allow_unicode=True)


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run .venv/bin/python deploy/rules.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
