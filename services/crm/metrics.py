"""The CRM's Prometheus metrics (prefix hotline_crm_), labelled never by user or call."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WS_CLIENTS = Gauge("hotline_crm_ws_clients", "Browsers connected to the desk websocket")
CDRS_WRITTEN = Counter(
    "hotline_crm_cdrs_written_total", "CDR rows inserted or changed by call events"
)
LOGINS = Counter("hotline_crm_logins_total", "Web login attempts by outcome", ["result"])
