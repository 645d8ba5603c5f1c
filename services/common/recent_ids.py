"""The ids seen lately, for deduplication: a bounded window that stays small when full.

A consumer remembers the last 100,000 event ids, so a full window is a steady-state cost of
every long-running service. An `OrderedDict` of the id strings takes ~184 bytes an id (the
36-character string ~93, the ordered-dict entry ~91), 17.6 MB for 100,000; here an id that
spells a UUID (what event and call ids are) is kept as its 16 bytes in a set, with a deque
giving the order to forget in: ~99 bytes an id, 9.5 MB. Any other id is kept as it is.
"""

from __future__ import annotations

from collections import deque


def _key(text: str) -> bytes | str:
    """The 16 bytes of a UUID written as 8-4-4-4-12 hex digits, else the text itself.

    Two spellings of one UUID (upper and lower case) are one id; nothing else is merged."""
    if len(text) != 36 or not text[8] == text[13] == text[18] == text[23] == "-":
        return text
    try:
        raw = bytes.fromhex(text.replace("-", ""))
    except ValueError:
        return text
    return raw if len(raw) == 16 else text  # fromhex skips blanks: "0a 0b" is 2 bytes


class RecentIds:
    """The last `capacity` distinct ids added; older ones are forgotten first."""

    __slots__ = ("capacity", "_members", "_order")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._members: set[bytes | str] = set()
        self._order: deque[bytes | str] = deque()

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and _key(text) in self._members

    def __len__(self) -> int:
        return len(self._order)

    def add(self, text: str) -> None:
        """Remember `text` (already remembered: nothing changes, it is not made younger)."""
        key = _key(text)
        if key in self._members:
            return
        self._members.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._members.discard(self._order.popleft())
