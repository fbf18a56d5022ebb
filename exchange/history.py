"""A transfer's state history: every change with its time, actor and reason, for both sides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from exchange.models import Transfer, TransferEvent, TransferStatus

REASON_MAX_CHARS = 1024


@dataclass(frozen=True)
class Change:
    at: datetime
    actor: str
    status: str
    reason: str


def change_status(
    session: Session,
    transfer: Transfer,
    status: TransferStatus,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """Moves the transfer on and writes the change, in the session's transaction."""
    transfer.status = status.value
    transfer.reason = reason[:REASON_MAX_CHARS]
    session.add(transfer)
    session.flush()
    note_change(session, transfer.pk or 0, status, actor=actor, reason=reason, now=now)


def note_change(
    session: Session,
    transfer_pk: int,
    status: TransferStatus,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """Only the history row (the transfer itself was changed by other means)."""
    session.add(
        TransferEvent(
            transfer_pk=transfer_pk,
            at=now,
            actor=actor[:256],
            status=status.value,
            reason=reason[:REASON_MAX_CHARS],
        )
    )


def record_change(
    engine: Engine, transfer_pk: int, status: TransferStatus, actor: str, reason: str, now: datetime
) -> None:
    """The history row on its own, committed (deliveries reported by the forwarding job)."""
    with Session(engine) as session:
        note_change(session, transfer_pk, status, actor=actor, reason=reason, now=now)
        session.commit()


def read_history(engine: Engine, transfer_pk: int) -> list[Change]:
    """Oldest first."""
    query = (
        select(TransferEvent)
        .where(TransferEvent.transfer_pk == transfer_pk)
        .order_by(col(TransferEvent.at), col(TransferEvent.pk))
    )
    with Session(engine) as session:
        return [Change(e.at, e.actor, e.status, e.reason) for e in session.exec(query)]
