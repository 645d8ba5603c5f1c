"""Who may call in on the SIP trunk, and which numbers answer there."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["TrunkPolicy"]


@dataclass(frozen=True)
class TrunkPolicy:
    """Calls are accepted from the allowed networks, to the trunk's DIDs only."""

    name: str = "sip-trunk"
    dids: frozenset[str] = frozenset()
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())
    trust_pai: bool = False  # take ANI from P-Asserted-Identity (RFC 3325) of these sources

    @classmethod
    def of(
        cls, name: str, dids: Iterable[str], allow: Iterable[str], trust_pai: bool = False
    ) -> TrunkPolicy:
        """Build from DIDs and CIDR strings (a bad CIDR raises ValueError naming it)."""
        nets = []
        for net in allow:
            try:
                nets.append(ipaddress.ip_network(net, strict=False))
            except ValueError as exc:
                raise ValueError(f"trunk {name}: bad network {net!r}: {exc}") from None
        return cls(name, frozenset(dids), tuple(nets), trust_pai)

    def source_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allow)

    def serves(self, dnis: str) -> bool:
        return dnis in self.dids
