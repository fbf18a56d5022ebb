"""Which allowed views were audited a moment ago, so that a viewer's hundred frame requests
make one audit event per study and minute, not a hundred.

Only views of pixels and metadata are folded; refusals, downloads, stores and deletes are
always written. The memory is per process and bounded: running scaled, each process writes
its own first event, which is still a complete trail.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

WINDOW_SECONDS = 60.0
CAPACITY = 10_000


class RecentViews:
    def __init__(self, window: float = WINDOW_SECONDS, capacity: int = CAPACITY) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def first_in_window(self, principal: str, action: str, study: str) -> bool:
        """True when this view should be audited; remembers it for the window."""
        key = (principal, action, study)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen < self.window:
                return False
            self._seen[key] = now
            self._seen.move_to_end(key)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True
