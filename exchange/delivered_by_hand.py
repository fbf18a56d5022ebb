"""Deliver as sent: a person records that a failed or partial delivery reached its node anyway.

It happens: the PACS stored every image, then the association dropped before the last answer,
so Ferry counted the delivery as failed. An administrator of the sending institution (the rule
is `policy.decision._decide_sender_administrator`) marks the transfer delivered, with the
reason they know it arrived. Nothing is sent; the transfer's history keeps who and why, the
audit trail records the step with the person's reason, and the parties are told it was
delivered as they are for any delivery.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session

from exchange.history import REASON_MAX_CHARS, change_status
from exchange.models import Transfer, TransferStatus
from exchange.parties import Actor, audit_step, decide_on, require
from exchange.transfers import notify_transfer
from foundation.errors import Conflict, InvalidQuery
from policy.decision import Decision
from policy.roles import Action

MARKABLE = frozenset({TransferStatus.FAILED, TransferStatus.PARTIAL})
PREFIX = "delivered by other means: "


def mark_delivered(engine: Engine, actor: Actor, public_id: str, reason: str) -> Transfer:
    """The transfer becomes delivered; 400 without a reason, 409 unless failed or partial."""
    transfer = require(engine, actor, Action.ADMINISTER, public_id, side="sender")
    reason = " ".join(reason.split())
    if not reason:
        raise InvalidQuery("say how you know the studies reached the destination")
    if len(PREFIX) + len(reason) > REASON_MAX_CHARS:
        most = REASON_MAX_CHARS - len(PREFIX)
        raise InvalidQuery(f"the reason may have at most {most} characters")
    if transfer.status not in MARKABLE:
        error = Conflict(
            f"only a failed or partial transfer is marked delivered; this one is {transfer.status}"
        )
        refused = Decision(False, "transfer-state", str(error))
        audit_step(engine, actor, transfer, "transfer", refused)
        raise error
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(Transfer, transfer.pk)
        assert stored is not None
        previous = TransferStatus(stored.status)
        stored.completed_at = actor.now
        change_status(session, stored, TransferStatus.DELIVERED, actor=actor.label,
                      reason=PREFIX + reason, now=actor.now)  # fmt: skip
        notify_transfer(session.connection(), stored, TransferStatus.DELIVERED, actor.now, previous)
        session.commit()
    allowed = decide_on(actor, Action.ADMINISTER, stored)
    audit_step(
        engine, actor, stored, "transfer", Decision(True, allowed.rule, reason),
        step="delivered-by-hand", was=previous.value, policy_reason=allowed.reason,
    )  # fmt: skip
    return stored
