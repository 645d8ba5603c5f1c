"""Routing decisions per second: the ACD's longest-idle strategy against a baseline.

The baseline is Python's builtin `min()` over the same agents by `idle_since`, the least work
any strategy could do; the ratio shows what skills matching and the strategy contract cost.
Run: .venv/bin/python bench/bench_routing.py
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from acd.agents import READY, Agent  # noqa: E402
from acd.queues import WaitingCall  # noqa: E402
from acd.routing.strategies import longest_idle  # noqa: E402


def agents(n: int) -> list[Agent]:
    out = []
    for i in range(n):
        a = Agent(f"agent{i}", str(8000 + i), skills=frozenset({"zh", "en"} if i % 2 else {"zh"}))
        a.state, a.idle_since = READY, 1000.0 - (i * 7919 % n)
        out.append(a)
    return out


def rate(fn, seconds: float = 0.5) -> float:  # noqa: ANN001
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            fn()
        count += 100
    return count / elapsed


def main() -> None:
    call = WaitingCall("c1", "support", 0, "5551234", "10000", skills=frozenset({"en"}))
    plain = WaitingCall("c2", "support", 0, "5551234", "10000")
    print(
        f"{'agents':>7} {'longest_idle/s':>15} {'with skills/s':>14} {'baseline min()/s':>17} "
        f"{'ratio':>6}"
    )
    for n in (16, 100, 1000):
        pool = agents(n)
        ours = rate(lambda pool=pool: longest_idle(plain, pool))
        skilled = rate(lambda pool=pool: longest_idle(call, pool))
        base = rate(lambda pool=pool: min(pool, key=lambda a: a.idle_since))
        print(f"{n:>7} {ours:>15,.0f} {skilled:>14,.0f} {base:>17,.0f} {ours / base:>6.2f}")


if __name__ == "__main__":
    main()
