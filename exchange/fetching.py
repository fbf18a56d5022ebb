"""What a job that fetches studies from an institution's nodes needs, handed over by the root.

The answer to a request (`exchange.answer_job`) and a transfer picked on the sender's own PACS
(`exchange.node_transfers`) both fetch through `RemotePacs`, decide with a fresh policy
snapshot, send through `exchange.sending` (which may queue forwarding jobs) and act at the
worker's "now". A node that cannot be reached is tried again (`FETCH_ATTEMPTS` runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archive.store import Archive
from exchange.request_search import RemotePacs
from exchange.routing import EnqueueForward
from foundation.clock import Clock
from foundation.jobs import DEFAULT_MAX_ATTEMPTS, ClaimedJob
from policy.decision import PolicySnapshot

# Runs of a fetch job while a node cannot be reached, unless `FERRY_FETCH_MAX_ATTEMPTS` says
# otherwise: with the queue's backoff (5 s, doubling) the last is about ten minutes after the
# first, long enough for a PACS to restart.
FETCH_ATTEMPTS = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True)
class FetchServices:
    archive: Archive
    pacs: RemotePacs
    enqueue_forward: EnqueueForward
    policy: Callable[[], PolicySnapshot]
    clock: Clock


def trying_again(nodes: str, why: str, job: ClaimedJob) -> str:
    """The history's note of a run that found its node(s) unreachable and will run again."""
    return (f"{nodes} could not be reached ({why}); Ferry tries again shortly "
            f"(attempt {job.attempts} of {job.max_attempts})")  # fmt: skip
