"""Routing strategies: given the agents who could take a call, which one rings.

A strategy is a pure function so it can be unit-tested and benchmarked without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from acd.agents import Agent
from acd.queues import WaitingCall

Strategy = Callable[[WaitingCall, Sequence[Agent]], Agent | None]


def longest_idle(call: WaitingCall, candidates: Sequence[Agent]) -> Agent | None:
    """The agent idle the longest (fair distribution of work); skills must all match."""
    best: Agent | None = None
    for agent in candidates:
        if call.skills and not call.skills <= agent.skills:
            continue
        if best is None or agent.idle_since < best.idle_since:
            best = agent
    return best


STRATEGIES: dict[str, Strategy] = {"longest_idle": longest_idle}
