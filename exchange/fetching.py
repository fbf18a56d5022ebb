"""What a job that fetches studies from an institution's nodes needs, handed over by the root.

The answer to a request (`exchange.answer_job`) and a transfer picked on the sender's own PACS
(`exchange.node_transfers`) both fetch through `RemotePacs`, decide with a fresh policy
snapshot, send through `exchange.sending` (which may queue forwarding jobs) and act at the
worker's "now".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archive.store import Archive
from exchange.request_search import RemotePacs
from exchange.routing import EnqueueForward
from foundation.clock import Clock
from policy.decision import PolicySnapshot


@dataclass(frozen=True)
class FetchServices:
    archive: Archive
    pacs: RemotePacs
    enqueue_forward: EnqueueForward
    policy: Callable[[], PolicySnapshot]
    clock: Clock
