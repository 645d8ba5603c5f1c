"""Which IVR instances still run their flows, so a call whose IVR is gone finds another.

The IVR names itself with each answer (`Call.flow_owner`) and says it is alive every few
seconds (`AdoptOrphans`). An IVR restarted under the same name takes up its own calls; one
whose pod was replaced (a new name: its node died, it was evicted) never comes back for them,
and its callers would sit on a silent line. Once its owner has been silent for `timeout_s`, a
call still in the IVR (answered, not bridged, not yet commanded by the ACD) is handed to the
live instance that asks — one at a time on the gateway's loop, so never to two. Sans-I/O:
time is given.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.core.calls import Call, CallState

#: entries of instances silent this many timeouts are dropped (pod names come and go)
FORGET_AFTER = 10


class FlowOwners:
    def __init__(self, timeout_s: float, now: float) -> None:
        self.timeout_s = timeout_s
        self._since = now  # instances unheard of since the gateway started count from here
        self._seen: dict[str, float] = {}

    def seen(self, instance: str, now: float) -> None:
        """`instance` answered a call or said it is alive."""
        if instance:
            self._seen[instance] = now

    def lost(self, instance: str, now: float) -> bool:
        return now - self._seen.get(instance, self._since) > self.timeout_s

    def adopt(self, calls: Iterable[Call], instance: str, now: float) -> list[Call]:
        """The calls left in a lost instance's flows, now owned by `instance` (alive: it
        asks)."""
        self.seen(instance, now)
        adopted = []
        for call in calls:
            owner = call.flow_owner
            if (
                owner
                and owner != instance
                and call.state is CallState.ANSWERED
                and call.agent is None
                and self.lost(owner, now)
            ):
                call.flow_owner = instance
                adopted.append(call)
        horizon = now - FORGET_AFTER * self.timeout_s
        for name in [n for n, t in self._seen.items() if t < horizon]:
            del self._seen[name]
        return adopted
