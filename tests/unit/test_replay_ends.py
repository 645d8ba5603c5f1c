"""Where a partition really ends, from its last record batch (`common.replay._stored_ends`),
when the broker is slow to hand that batch over: a consumer stand-in answers empty fetches
first. The broker side is tested against Tansu in tests/integration/test_replay.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from common.replay import _stored_ends

AGENTS = TopicPartition("agents", 0)


@dataclass
class Record:
    offset: int


class SlowConsumer:
    """Hands over each sought partition's batch (`batch` records from the sought offset) only
    at the `empty`+1-th fetch; never when `empty` is None."""

    def __init__(self, batch: int, empty: int | None) -> None:
        self.batch, self.empty = batch, empty
        self.sought: dict[TopicPartition, int] = {}
        self.fetches = 0
        self.assigned: list[TopicPartition] = []

    def assign(self, parts: list[TopicPartition]) -> None:
        self.assigned = list(parts)

    def unsubscribe(self) -> None:
        self.assigned = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def getmany(self, *parts: TopicPartition, timeout_ms: int) -> dict:
        self.fetches += 1
        if self.empty is None or self.fetches <= self.empty:
            return {}
        return {tp: [Record(self.sought[tp] + i) for i in range(self.batch)] for tp in parts}


async def test_a_batch_handed_over_late_still_gives_the_true_end() -> None:
    # Tansu reports 11,396 (the last batch's base offset + 1) for a partition whose last batch
    # holds two records; under load its first fetches came back empty, and after three the
    # short end was kept: the ACD took it for a lost topic and restated every agent
    consumer = SlowConsumer(batch=2, empty=5)
    ends = await _stored_ends(consumer, {AGENTS: 11396})  # type: ignore[arg-type]
    assert ends == {AGENTS: 11397}
    assert consumer.fetches == 6 and consumer.assigned == []


async def test_a_batch_never_handed_over_fails_the_look() -> None:
    consumer = SlowConsumer(batch=2, empty=None)
    with pytest.raises(KafkaTimeoutError, match=r"agents\[0\] not read in 0.3 s"):
        await _stored_ends(consumer, {AGENTS: 11396}, budget_s=0.3)  # type: ignore[arg-type]
    assert consumer.assigned == []


async def test_empty_partitions_are_not_looked_at() -> None:
    consumer = SlowConsumer(batch=2, empty=None)
    assert await _stored_ends(consumer, {AGENTS: 0}) == {AGENTS: 0}  # type: ignore[arg-type]
    assert consumer.fetches == 0
