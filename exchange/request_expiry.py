"""Requests nobody answered in time expire (FERRY_REQUEST_EXPIRY_DAYS): a periodic sweep."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from exchange.request_models import PENDING, ImagingRequest, RequestStatus
from exchange.request_parties import audit_request, change_status
from policy.decision import Decision


def expire_due(engine: Engine, now: datetime) -> int:
    """Pending requests past their expiry become expired (by Ferry); returns how many."""
    query = (
        select(ImagingRequest)
        .where(col(ImagingRequest.status).in_([s.value for s in PENDING]))
        .where(col(ImagingRequest.expires_at) <= now)
        .order_by(col(ImagingRequest.pk))
        .limit(500)
    )
    with Session(engine, expire_on_commit=False) as session:
        due = list(session.exec(query))
        for request in due:
            request.closed_at = now
            change_status(session, request, RequestStatus.EXPIRED, actor="ferry",
                          reason="nobody answered in time", now=now)  # fmt: skip
        session.commit()
    for request in due:
        decision = Decision(True, "request-expiry", "nobody answered in time")
        audit_request(engine, None, request, "request", decision, step="expired")
    return len(due)


def request_sweeper(engine: Engine, clock: Callable[[], datetime]) -> Callable[[], int]:
    """A periodic tick for `foundation.jobs.Worker(ticks=[...])`."""

    def sweep() -> int:
        return expire_due(engine, clock())

    return sweep
