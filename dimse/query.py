"""C-FIND SCP (placeholder until implemented)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dimse import statuses
from dimse.callers import Caller
from dimse.context import BridgeContext


def handle_find(context: BridgeContext, caller: Caller, event: Any) -> Iterator[tuple[int, Any]]:
    yield statuses.UNABLE_TO_PROCESS, None
