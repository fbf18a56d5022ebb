"""What a job that fills a person's draft writes on it: its history's notes, and the last word
on a draft it leaves unsent, with the sending institution's `transfer-not-sent` email.

The jobs are the fetch from the sender's own PACS (`exchange.node_transfers`) and the making of
pseudonymised copies (`exchange.pseudonymisation`).
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session

from exchange.history import note_change
from exchange.models import Transfer, TransferStatus
from exchange.notifications import Event, EventKind, Subject, notify
from exchange.notifications import Priority as EventPriority
from exchange.parties import Actor


def note_on_draft(
    engine: Engine, actor: Actor, transfer: Transfer, reason: str, event: Event | None = None
) -> None:
    """A history row on the draft, and `event`'s email queued in the same transaction."""
    with Session(engine) as session:
        note_change(session, transfer.pk or 0, TransferStatus.DRAFT, actor=actor.label,
                    reason=reason[:1024], now=actor.now)  # fmt: skip
        if event is not None:
            notify(session.connection(), event, now=actor.now)
        session.commit()


def not_sent(engine: Engine, actor: Actor, transfer: Transfer, reason: str) -> None:
    """The history's last word on a draft the job leaves unsent, with the sending institution's
    failure email (`transfer-not-sent`)."""
    event = Event(
        EventKind.TRANSFER_NOT_SENT, transfer.sender_institution_pk,
        Subject("transfer", transfer.pk or 0), EventPriority(transfer.priority),
        actor_user_pk=actor.user_pk, counterpart_pk=transfer.destination_institution_pk,
    )  # fmt: skip
    note_on_draft(engine, actor, transfer, reason, event)
