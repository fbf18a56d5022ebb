"""How a transfer ends under retention: `expired` when its receiving institution holds none of
its studies any more, `deleted` when none of them is left in the archive.

The retention sweeper calls these after it removes a grant or deletes a study, and a DICOMweb
DELETE after it deletes one. Grants are looked up by study and institution, not by the transfer
that gave them: a study sent twice shares the first transfer's grant. Each change is a history
row like any other, by the actor that removed the copy, so both institutions see why the
studies are gone. Transfers that never reached their receiver (a draft, cancelled, returned,
refused, still collecting) keep their state. A transfer that expires before anyone at the
receiver downloaded it, or whose studies retention deletes before then, tells the sending
institution (`transfer-expired`, a failure).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, exists, func, or_
from sqlmodel import Session, col, select

from archive.models import Study, StudyGrant
from exchange.history import change_status
from exchange.models import ENDED_BY_RETENTION, Transfer, TransferStatus, TransferStudy
from exchange.parties import study_uids
from exchange.transfers import notify_transfer

_NEVER_RECEIVED = frozenset(
    {
        TransferStatus.DRAFT,
        TransferStatus.COLLECTING,
        TransferStatus.CANCELLED,
        TransferStatus.RETURNED,
        TransferStatus.REFUSED,
    }
)
# The actor of the changes the retention sweeper makes (history rows, audit events).
RETENTION_ACTOR = "ferry:retention"


def _may_end(transfer: Transfer, status: TransferStatus) -> bool:
    current = TransferStatus(transfer.status)
    if current in _NEVER_RECEIVED or current == TransferStatus.DELETED:
        return False
    return status == TransferStatus.DELETED or current not in ENDED_BY_RETENTION


def _end(transfer: Transfer) -> TransferStatus:
    """Where the transfer stands before it ends, kept (`ended_from`) at its first end."""
    current = TransferStatus(transfer.status)
    if current not in ENDED_BY_RETENTION:
        transfer.ended_from = current.value
    return current


def _carrying(study_uid: str) -> Any:
    listed = exists().where(
        col(TransferStudy.transfer_pk) == Transfer.pk,
        col(TransferStudy.study_instance_uid) == study_uid,
    )
    return select(Transfer).where(or_(listed, col(Transfer.study_instance_uid) == study_uid))


def note_grant_removed(
    engine: Engine, study_uid: str, institution_pk: int, actor: str, now: datetime
) -> int:
    """After an institution's grant on a study went: each transfer that brought the study to it
    expires once the institution holds none of the transfer's studies any more."""
    ended = 0
    with Session(engine) as session:
        query = _carrying(study_uid).where(Transfer.destination_institution_pk == institution_pk)
        for transfer in session.exec(query).all():
            if not _may_end(transfer, TransferStatus.EXPIRED):
                continue
            live = (
                select(func.count())
                .select_from(StudyGrant)
                .join(Study, col(Study.pk) == StudyGrant.study_pk)
                .where(col(Study.study_instance_uid).in_(study_uids(session, transfer)))
                .where(StudyGrant.institution_pk == institution_pk)
                .where(col(StudyGrant.revoked_at).is_(None))
                .where(or_(col(StudyGrant.expires_at).is_(None), col(StudyGrant.expires_at) > now))
            )
            if session.exec(live).one():
                continue
            reason = "the receiving institution's retention period ended; its copy is gone"
            previous = _end(transfer)
            change_status(session, transfer, TransferStatus.EXPIRED, actor=actor, reason=reason,
                          now=now)  # fmt: skip
            notify_transfer(session.connection(), transfer, TransferStatus.EXPIRED, now, previous)
            ended += 1
        session.commit()
    return ended


def note_study_deleted(
    engine: Engine, study_uid: str, actor: str, now: datetime, *, by_retention: bool = False
) -> int:
    """After a study went: each transfer that carried it and has no study left is deleted.

    `by_retention`: the study went because its retention periods ended (the sweeper), so a
    transfer nobody at the receiver had taken ran out unused, and its sender is told; a study
    deleted by a person or a tool tells nobody."""
    ended = 0
    with Session(engine) as session:
        for transfer in session.exec(_carrying(study_uid)).all():
            if not _may_end(transfer, TransferStatus.DELETED):
                continue
            left = select(func.count()).where(col(Study.study_instance_uid).in_(
                study_uids(session, transfer)))  # fmt: skip
            if session.exec(left).one():
                continue
            previous = _end(transfer)
            change_status(session, transfer, TransferStatus.DELETED, actor=actor,
                          reason="its studies were deleted", now=now)  # fmt: skip
            if by_retention:
                notify_transfer(
                    session.connection(), transfer, TransferStatus.DELETED, now, previous
                )
            ended += 1
        session.commit()
    return ended
