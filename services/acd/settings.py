"""The ACD's settings: its queues, the timers of an offer and of wrap-up, and how a restarted
or standby ACD takes over (its lease, how far back it replays, how often it reconciles).

With `common.settings` the only reader of `HOTLINE_*` for the ACD. docs/configuration.md lists
every variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import Env, Settings

DEFAULT_QUEUES = ("sales", "support")
LEASES = ("file", "kubernetes")


@dataclass(frozen=True)
class AcdSettings(Settings):
    queues: tuple[str, ...] = DEFAULT_QUEUES  # HOTLINE_ACD_QUEUES, comma-separated
    ring_timeout_s: float = 15.0  # HOTLINE_RING_TIMEOUT_S: an offer rings this long
    wrap_up_s: float = 60.0  # HOTLINE_WRAP_UP_S: after-call work, then Ready
    short_abandon_s: float = 5.0  # HOTLINE_SHORT_ABANDON_S: quicker hang-ups are short abandons
    lease: str = "file"  # HOTLINE_ACD_LEASE: file (one machine) | kubernetes
    lease_file: Path | None = None  # HOTLINE_ACD_LEASE_FILE; None: $HOTLINE_VAR_DIR/acd.lease
    lease_name: str = "hotline-acd"  # HOTLINE_ACD_LEASE_NAME: the Kubernetes Lease object
    lease_namespace: str = ""  # HOTLINE_ACD_LEASE_NAMESPACE; "": the pod's own namespace
    lease_duration_s: int = 3  # HOTLINE_ACD_LEASE_DURATION_S: a standby takes over after it
    max_wait_s: float = 3600.0  # HOTLINE_ACD_MAX_WAIT_S: longest wait; bounds the replay
    reconcile_s: float = 5.0  # HOTLINE_ACD_RECONCILE_S: live calls checked this often
    #: HOTLINE_ACD_FETCH_WAIT_MS: the fetch wait of the ACD's tail on `calls`; unset, the
    #: services' HOTLINE_KAFKA_FETCH_WAIT_MS. On the local broker (Tansu) it is how late a
    #: call's end (abandon, the agent's wrap-up) or a transfer can reach the ACD, and, since
    #: the tail fetches that often even when idle, most of an idle ACD's CPU
    acd_fetch_wait_ms: int = 20
    kube_host: str = ""  # KUBERNETES_SERVICE_HOST, set by kubelet in every pod
    kube_port: str = ""  # KUBERNETES_SERVICE_PORT

    @property
    def lease_path(self) -> Path:
        return self.lease_file or self.var_dir / "acd.lease"

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        queues = env.items("ACD_QUEUES", ",".join(DEFAULT_QUEUES))
        raw = env.text("ACD_QUEUES", "")
        if not queues:
            raise env.error("ACD_QUEUES", raw, "names no queue (e.g. sales,support)")
        if len(set(queues)) != len(queues):
            raise env.error("ACD_QUEUES", raw, "names a queue twice")
        lease = env.text("ACD_LEASE", "file").strip().lower()
        if lease not in LEASES:
            raise env.error("ACD_LEASE", env.text("ACD_LEASE", ""), "is not file or kubernetes")
        duration = env.integer("ACD_LEASE_DURATION_S", 3)
        if duration < 2:
            raise env.error(
                "ACD_LEASE_DURATION_S",
                env.text("ACD_LEASE_DURATION_S", ""),
                "must be at least 2 (seconds: the holder renews every second)",
            )
        common = super().read(env)
        fetch_wait = env.integer("ACD_FETCH_WAIT_MS", common["kafka_fetch_wait_ms"])
        if not 1 <= fetch_wait <= 1000:
            raise env.error("ACD_FETCH_WAIT_MS", str(fetch_wait), "must be 1-1000 (milliseconds)")
        kube_host = env.foreign("KUBERNETES_SERVICE_HOST")
        if lease == "kubernetes" and not kube_host:
            raise env.error(
                "ACD_LEASE", "kubernetes", "needs the API server: KUBERNETES_SERVICE_HOST is unset"
            )
        return common | {
            "queues": queues,
            "acd_fetch_wait_ms": fetch_wait,
            "ring_timeout_s": env.number("RING_TIMEOUT_S", 15.0, above=0),
            "wrap_up_s": env.number("WRAP_UP_S", 60.0, minimum=0),
            "short_abandon_s": env.number("SHORT_ABANDON_S", 5.0, minimum=0),
            "lease": lease,
            "lease_file": env.optional_path("ACD_LEASE_FILE"),
            "lease_name": env.text("ACD_LEASE_NAME", "hotline-acd"),
            "lease_namespace": env.text("ACD_LEASE_NAMESPACE", ""),
            "lease_duration_s": duration,
            "max_wait_s": env.number("ACD_MAX_WAIT_S", 3600.0, above=0),
            "reconcile_s": env.number("ACD_RECONCILE_S", 5.0, above=0),
            "kube_host": kube_host,
            "kube_port": env.foreign("KUBERNETES_SERVICE_PORT"),
        }
