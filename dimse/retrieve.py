"""C-MOVE and C-GET SCP (placeholder until implemented)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dimse import statuses
from dimse.callers import Caller
from dimse.context import BridgeContext


def handle_move(context: BridgeContext, caller: Caller, event: Any) -> Iterator[Any]:
    yield None, None
    yield statuses.UNABLE_TO_PROCESS, None


def handle_get(context: BridgeContext, caller: Caller, event: Any) -> Iterator[Any]:
    yield statuses.UNABLE_TO_PROCESS, None
