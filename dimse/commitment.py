"""Storage Commitment Push Model SCP (placeholder until implemented)."""

from __future__ import annotations

from typing import Any

from dimse import statuses
from dimse.callers import Caller
from dimse.context import BridgeContext


def handle_n_action(context: BridgeContext, caller: Caller, event: Any) -> tuple[int, Any]:
    return statuses.NO_SUCH_SOP_CLASS, None
