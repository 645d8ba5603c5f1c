"""How much the gateway can still take: media ports in use and free, as Prometheus gauges.

Every call leg holds one even RTP port; when the range is exhausted new calls are refused
(503), so SREs watch the free count, and the fault soak checks that none stays in use.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.media.endpoint import PortAllocator

__all__ = ["MediaPortCollector"]


class MediaPortCollector(Collector):
    """`hotline_rtp_ports{state="in_use"|"free"}` of the gateway's RTP range."""

    def __init__(self, allocator: PortAllocator, site: str) -> None:
        self.allocator, self.site = allocator, site

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hotline_rtp_ports",
            "RTP ports of the gateway's range by state",
            labels=["state", "site"],
        )
        in_use = self.allocator.in_use
        family.add_metric(["in_use", self.site], in_use)
        family.add_metric(["free", self.site], self.allocator.capacity - in_use)
        yield family
