"""Whose a job is: the institutions of the transfer or request it serves, read from its payload.

A delivery to a node (`"transfer_pk": N`) serves both parties of transfer N: the sender's
delivery into the receiver's node, which either may have fixed. Studies fetched into a draft
(`"transfer": ID`) serve only the sender (a draft is nobody else's). Studies fetched to answer
a request (`"request": ID`) serve the asked institution, whose answer it is. Any other job
(notifications, Ferry's own work) has no owner: only a system administrator sees it.
`policy.decision._decide_job` says who may see and retry; `jobs_of` is the same rule as an SQL
scope, so a list holds only the jobs the principal may see, and its limit counts only them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from sqlalchemy import Engine, String, cast, literal, or_, union
from sqlmodel import Session, col, select

from exchange.models import Transfer
from exchange.request_models import ImagingRequest
from foundation.jobs import Job


def owners_of(engine: Engine, job: Job) -> frozenset[int]:
    """The institutions whose administrators may see and retry `job` (none: the system's)."""
    payload: dict[str, Any] = orjson.loads(job.payload or "{}")
    with Session(engine) as session:
        if isinstance(payload.get("transfer_pk"), int):
            transfer = session.get(Transfer, payload["transfer_pk"])
            if transfer is not None:
                return frozenset(
                    {transfer.sender_institution_pk, transfer.destination_institution_pk}
                )
        if isinstance(payload.get("transfer"), str):
            found = session.exec(
                select(Transfer.sender_institution_pk).where(
                    Transfer.public_id == payload["transfer"]
                )
            ).first()
            if found is not None:
                return frozenset({found})
        if isinstance(payload.get("request"), str):
            asked = session.exec(
                select(ImagingRequest.asked_institution_pk).where(
                    ImagingRequest.public_id == payload["request"]
                )
            ).first()
            if asked is not None:
                return frozenset({asked})
    return frozenset()


def _owned(institution_pks: Collection[int]) -> Any:
    """The pks of jobs that serve a transfer or request of these institutions."""
    pks = list(institution_pks)
    number = literal('"transfer_pk":') + cast(col(Transfer.pk), String)
    delivery = or_(  # payloads are compact JSON: the number ends at "," or "}"
        col(Job.payload).contains(number + literal(",")),
        col(Job.payload).contains(number + literal("}")),
    )
    draft = literal('"transfer":"') + col(Transfer.public_id) + literal('"')
    answer = literal('"request":"') + col(ImagingRequest.public_id) + literal('"')
    party = or_(
        col(Transfer.sender_institution_pk).in_(pks),
        col(Transfer.destination_institution_pk).in_(pks),
    )
    return union(
        select(col(Job.pk)).join(Transfer, delivery).where(party),
        select(col(Job.pk))
        .join(Transfer, col(Job.payload).contains(draft))
        .where(col(Transfer.sender_institution_pk).in_(pks)),
        select(col(Job.pk))
        .join(ImagingRequest, col(Job.payload).contains(answer))
        .where(col(ImagingRequest.asked_institution_pk).in_(pks)),
    )


def jobs_of(
    engine: Engine,
    institution_pks: Collection[int],
    status: str | None = None,
    kind: str | None = None,
    limit: int = 200,
) -> list[Job]:
    """Newest first: the jobs serving these institutions' transfers and requests."""
    query = (
        select(Job)
        .where(col(Job.pk).in_(_owned(institution_pks)))
        .order_by(col(Job.pk).desc())
        .limit(limit)
    )
    if status:
        query = query.where(col(Job.status) == status)
    if kind:
        query = query.where(col(Job.kind) == kind)
    with Session(engine) as session:
        rows = list(session.exec(query))
        for row in rows:
            session.expunge(row)
    return rows
