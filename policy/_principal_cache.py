"""Principals built from credentials, kept per process while the revocation epoch holds."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from policy.principal import Principal

CAPACITY = 10_000


@dataclass
class CachedPrincipal:
    """What a credential proved, valid while the epoch is `epoch` and `now < valid_until`."""

    epoch: int
    principal: Principal
    valid_until: datetime | None
    claims: dict[str, Any] = field(default_factory=dict)
    touched_at: datetime | None = None  # an API token's last `last_used_at` write


class PrincipalCache:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedPrincipal] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(kind: str, credential: str) -> str:
        """The credential itself is not kept, only its hash."""
        return hashlib.sha256(f"{kind}:{credential}".encode()).hexdigest()

    def get(self, key: str, epoch: int | None, now: datetime) -> CachedPrincipal | None:
        if epoch is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.epoch != epoch or (entry.valid_until is not None and now >= entry.valid_until):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: CachedPrincipal) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
