"""Reports sent with a transfer leave with its studies: when retention deletes the last of them.

A report is clinical text about the transfer's studies; once none of them is in the archive,
nobody may read them any more, and the report has outlived its retention too.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, or_
from sqlmodel import Session, col, select

from archive.models import Study
from exchange.models import Transfer, TransferReport, TransferStudy
from exchange.parties import study_uids


def remove_orphaned_reports(engine: Engine, study_uid: str) -> int:
    """After `study_uid` was deleted: the reports of its transfers whose studies are all gone."""
    listed = select(TransferStudy.transfer_pk).where(TransferStudy.study_instance_uid == study_uid)
    with Session(engine) as session:
        transfers = session.exec(
            select(Transfer).where(
                or_(col(Transfer.pk).in_(listed), col(Transfer.study_instance_uid) == study_uid)
            )
        ).all()
        gone = []
        for transfer in transfers:
            uids = study_uids(session, transfer)
            left = session.exec(
                select(Study.pk).where(col(Study.study_instance_uid).in_(uids))
            ).first()
            if left is None:
                gone.append(transfer.pk)
        if not gone:
            return 0
        removed = (
            session.connection()
            .execute(delete(TransferReport).where(col(TransferReport.transfer_pk).in_(gone)))
            .rowcount
        )
        session.commit()
    return int(removed or 0)
