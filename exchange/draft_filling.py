"""The end of a job that fills a person's draft: its history's notes, the draft sent when asked,
or the last word on a draft it leaves unsent, with the sending institution's `transfer-not-sent`
email.

The jobs are the fetch from the sender's own PACS (`exchange.node_transfers`) and the making of
pseudonymised copies (`exchange.pseudonymisation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlmodel import Session

from archive.store import Archive
from exchange import sending
from exchange.history import note_change
from exchange.models import Transfer, TransferStatus
from exchange.notifications import Event, EventKind, Subject, notify
from exchange.notifications import Priority as EventPriority
from exchange.parties import Actor
from exchange.routing import EnqueueForward
from foundation.errors import FerryError
from foundation.jobs import JobFailed
from policy.decision import PolicySnapshot


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


def finish(
    archive: Archive,
    actor: Actor,
    transfer: Transfer,
    *,
    failed: Sequence[str],
    total: int,
    done: str,
    send: bool,
    policy: Callable[[], PolicySnapshot],
    enqueue_forward: EnqueueForward,
) -> str:
    """After a run that tried every study: unsent with the reasons if any failed (a permanent
    failure of the job), else kept, or sent with `send`. `done` says what was done to each
    ("fetched", "copied"). Returns the job's result."""
    if failed:
        reason = f"not sent: {len(failed)} of {total} studies not {done}"
        not_sent(archive.engine, actor, transfer, reason)
        raise JobFailed(f"{reason}: {'; '.join(failed)}"[:1000], permanent=True)
    if not send:
        return f"{total} studies {done} into the draft"
    try:
        sent = sending.send_transfer(
            archive, actor, transfer.public_id, policy(), enqueue_forward, by_filling_job=True
        )
    except FerryError as error:  # refused: audited by sending; the draft stays
        not_sent(archive.engine, actor, transfer, f"not sent: {error}")
        raise JobFailed(f"the transfer was not sent: {error}", permanent=True) from error
    return f"{done} and sent: {sent.status}"
