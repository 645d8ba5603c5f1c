"""The analog card's gauges: lines by state, and the span's red alarm counting ports in alarm."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.analog.sim import SimCard
from gateway.channels.analog import LineStateCollector


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(name, labels)


def test_span_alarm_counts_ports_in_alarm_and_clears() -> None:
    card = SimCard(4)
    registry = CollectorRegistry()
    registry.register(LineStateCollector(card, "hq"))
    red = {"span": "1", "alarm": "red", "site": "hq"}
    assert sample(registry, "hotline_analog_span_alarm", red) == 0
    card.ports[1]._alarm(True)  # the driver's hook: the line lost its battery
    card.ports[3]._alarm(True)
    assert sample(registry, "hotline_analog_span_alarm", red) == 2
    assert sample(registry, "hotline_analog_lines", {"state": "out_of_service", "site": "hq"}) == 2
    assert sample(registry, "hotline_analog_lines", {"state": "idle", "site": "hq"}) == 2
    card.ports[1]._alarm(False)
    card.ports[3]._alarm(False)
    assert sample(registry, "hotline_analog_span_alarm", red) == 0
