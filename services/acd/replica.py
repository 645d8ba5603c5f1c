"""One active ACD among its replicas: standby until this replica holds the lease, active until
it loses it.

A standby serves nothing (no gRPC, no consumer, no dispatching) and says so in /readyz
(`acd-role`: "standby"), so a Kubernetes Service or a client given every replica's address
reaches only the active one. Once it holds the lease it rebuilds the state from the broker and
the gateway (acd.recovery) and serves. An active replica that loses the lease stops acting at
once: every command and event is fenced (`Dispatcher.fence`, `AcdNotifier.fence`), and the process
exits, so that it comes back as a standby (its orchestrator restarts it) and no two replicas
ever act at once. docs/reliability.md says why the leases are what they are.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from acd.settings import AcdSettings
from common.health import Readiness
from common.lease import SERVICE_ACCOUNT, FileLease, KubernetesApi, KubernetesLease, Lease

log = logging.getLogger(__name__)

CHECK = "acd-role"
#: exit status of a replica that lost its lease (EX_TEMPFAIL: restart me)
EXIT_LEASE_LOST = 75


def identity() -> str:
    """This replica's name in the lease: host (the pod's name in Kubernetes), pid, and a random
    part, so a restarted process never mistakes its predecessor's lease for its own."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def lease_from(settings: AcdSettings) -> Lease:
    if settings.lease == "kubernetes":
        namespace = settings.lease_namespace or (
            (SERVICE_ACCOUNT / "namespace").read_text().strip()
        )
        duration = settings.lease_duration_s
        return KubernetesLease(
            KubernetesApi.in_cluster(settings.kube_host, settings.kube_port),
            namespace,
            settings.lease_name,
            identity(),
            duration_s=duration,
            renew_s=duration / 3,
            renew_deadline_s=duration * 2 / 3,
            retry_s=0.5,
        )
    return FileLease(Path(settings.lease_path), identity())


class Replica:
    def __init__(
        self, lease: Lease, readiness: Readiness, exit: Callable[[int], object] = os._exit
    ) -> None:
        self.lease, self.readiness, self._exit = lease, readiness, exit

    async def become_active(self) -> None:
        """Wait (as a standby) until this replica holds the lease."""
        self.readiness.set(CHECK, False, "standby: another replica holds the lease")
        await self.lease.acquire()
        self.readiness.set(CHECK, False, "active: rebuilding its state")
        log.info("this ACD replica is now the active one")

    async def watch(self) -> None:
        """Stop at once when the lease is lost: not ready, then exit without another action."""
        await self.lease.lost.wait()
        self.readiness.set(CHECK, False, "lease lost: stopping")
        log.critical("lease lost: this ACD replica stops now (another one may be active)")
        self._exit(EXIT_LEASE_LOST)
