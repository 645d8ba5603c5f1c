"""RecentIds (common/recent_ids.py): the dedup window of the consumers, the CRM's desk pushes
and the ACD's ended calls — the last N ids, in little memory when full."""

from __future__ import annotations

import tracemalloc
import uuid
from collections import OrderedDict

import pytest

from common.recent_ids import RecentIds


def test_remembers_the_last_ids_and_forgets_the_oldest_first() -> None:
    recent = RecentIds(3)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for i in ids[:3]:
        recent.add(i)
    assert all(i in recent for i in ids[:3]) and len(recent) == 3
    recent.add(ids[0])  # seen again: not made younger
    recent.add(ids[3])
    assert ids[0] not in recent
    assert [i in recent for i in ids] == [False, True, True, True]
    assert len(recent) == 3


def test_ids_that_are_not_uuids_are_kept_as_they_are() -> None:
    recent = RecentIds(10)
    odd = [
        "e-1",
        "x" * 36,
        "0123456-89ab-cdef-0123-456789abcdef0",  # 36 characters, dashes elsewhere
        "0123456789ab-cdef-0123-456789abcdef",  # 35 characters
        "01234567-89ab-cdef-0123-4567 9abcdef",  # a blank, which bytes.fromhex would skip
    ]
    for text in odd:
        recent.add(text)
    assert all(text in recent for text in odd)
    assert "e-2" not in recent and "01234567-89ab-cdef-0123-456789abcdef" not in recent
    assert 42 not in recent


def test_one_uuid_in_either_case_is_one_id() -> None:
    recent = RecentIds(10)
    event_id = str(uuid.uuid4())
    recent.add(event_id)
    assert event_id.upper() in recent
    recent.add(event_id.upper())
    assert len(recent) == 1


def test_a_full_window_of_uuids_is_about_half_an_ordered_dict_of_them() -> None:
    """What a consumer keeps once 100,000 events went through it: ~99 bytes an id instead of
    the ~176-184 of an OrderedDict of the strings (measured on 50,000)."""
    n = 50_000

    def retained(build: object) -> float:
        tracemalloc.start()
        try:
            ids = [str(uuid.uuid4()) for _ in range(n)]  # as events arrive: new strings
            kept = build(ids)  # type: ignore[operator]
            del ids  # what stays is what the window holds
            size = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(kept) == n
        return size / n

    def ordered(ids: list[str]) -> OrderedDict[str, None]:
        return OrderedDict.fromkeys(ids)

    def recent(ids: list[str]) -> RecentIds:
        window = RecentIds(n)
        for i in ids:
            window.add(i)
        return window

    old, new = retained(ordered), retained(recent)
    assert new < 0.6 * old


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RecentIds(0)
