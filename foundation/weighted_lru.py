"""A thread-safe least-recently-used memory, bounded by the summed weight of what it keeps.

For caches of derived, immutable things kept per process (frame layouts by frame count, ZIP
plans by bytes): an entry heavier than the whole budget is not kept; the least recently used
entries go until the rest fits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WeightedLRU(Generic[K, V]):
    def __init__(self, budget: int, weigh: Callable[[V], int]) -> None:
        self.budget = budget
        self._weigh = weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        weight = self._weigh(value)
        if weight > self.budget:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._weight += weight
            while self._weight > self.budget:
                _, dropped = self._items.popitem(last=False)
                self._weight -= self._weigh(dropped)
