"""Transfers made by people and tools: draft, send, cancel, resend, return, mark done.

A person or API client with the right to send picks studies it may see and a destination: an
institution's worklist or one of its nodes. Sending asks the destination rules now (core or out
of hours, holidays: `exchange.routing.decide_route`); allowed, the destination institution is
granted the studies and, for a node, one forwarding job per study is queued in the same
transaction. Every change is written to the transfer's history and audited
(`exchange.parties.audit_step`, with the transfer's opaque id as the transaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session, select

from archive.models import Study, StudyGrant
from archive.store import Archive
from exchange.grants import add_grant, live_grants
from exchange.history import change_status, note_change
from exchange.models import (
    DRAFT_FILLING_JOBS,
    NOTE_MAX_CHARS,
    PSEUDONYMISE_FOR_TRANSFER,
    Origin,
    Priority,
    Transfer,
    TransferReport,
    TransferStatus,
    TransferStudy,
)
from exchange.parties import Actor, actor_payload, audit_step, require, study_uids
from exchange.pseudonymisation_profiles import ProfileNotFound, find_profile
from exchange.routing import EnqueueForward, Target, decide_route
from exchange.transfers import notify_transfer
from foundation.errors import Conflict, Forbidden, InvalidQuery
from foundation.jobs import JobQueue, enqueue
from policy.decision import Decision, PolicySnapshot, Resource, decide
from policy.roles import Action
from policy.store import DuplicateRecord, InvalidRecord

MAX_STUDIES = 500
MAX_REPORTS = 10
CANCELLABLE = frozenset(
    {
        TransferStatus.DRAFT,
        TransferStatus.SENT,
        TransferStatus.ON_WORKLIST,
        TransferStatus.VIEWED,
        TransferStatus.PARTIAL,
        TransferStatus.FAILED,
        TransferStatus.REFUSED,
    }
)
RESENDABLE = frozenset({TransferStatus.FAILED, TransferStatus.PARTIAL})
RETURNABLE = frozenset(
    {
        TransferStatus.ON_WORKLIST,
        TransferStatus.VIEWED,
        TransferStatus.DELIVERED,
        TransferStatus.PARTIAL,
        TransferStatus.FAILED,
    }
)


@dataclass(frozen=True)
class NewTransfer:
    sender_pk: int
    destination_pk: int
    node_pk: int | None = None  # None: the destination institution's worklist
    studies: Sequence[str] = ()
    priority: Priority = Priority.ROUTINE
    note: str = ""
    reports: Sequence[tuple[str, str]] = field(default_factory=tuple)  # (title, text)
    # With a profile, the draft gets pseudonymised copies of `studies`, never the studies
    # (`exchange.pseudonymisation`), and is sent once they are in if `send_when_copied`.
    profile: str | None = None
    send_when_copied: bool = False


def _grant_reason(transfer: Transfer) -> str:
    return f"transfer {transfer.pk}"  # as exchange.routing writes it for pushed transfers


def _refuse(
    engine: Engine, actor: Actor, transfer: Transfer, action: str, error: Exception
) -> None:
    """A refusal for the transfer's state or content: audited, then raised."""
    decision = Decision(False, "transfer-state", str(error))
    audit_step(engine, actor, transfer, action, decision)
    raise error


# -- drafting -------------------------------------------------------------------------------


def check_studies(archive: Archive, actor: Actor, uids: Sequence[str]) -> list[str]:
    """The studies, once each, if the actor may see every one; unknown and unseen look alike."""
    unique = list(dict.fromkeys(uid.strip() for uid in uids if uid.strip()))
    if len(unique) > MAX_STUDIES:
        raise InvalidQuery(f"a transfer holds at most {MAX_STUDIES} studies")
    for uid in unique:
        access = archive.read_study_access(uid)
        resource = (
            Resource.study_from_rows(uid, access.institution_pk, access.grants)
            if access
            else Resource.study(uid, None)
        )
        decision = decide(actor.principal, Action.READ_METADATA, resource, actor.context)
        if access is None or not decision.allowed:
            raise InvalidQuery(f"no study {uid[:64]!r} that you may see")
    return unique


def check_own_studies(archive: Archive, actor: Actor, uids: Sequence[str], owner: int) -> None:
    """Pseudonymised copies are made of the sending institution's own studies only (one it
    was granted stays its owner's to share): 400, saying so, for another's."""
    for uid in check_studies(archive, actor, uids):
        access = archive.read_study_access(uid)
        if access is None or access.institution_pk != owner:
            raise InvalidQuery(
                f"study {uid[:64]!r} is not this institution's own: pseudonymised copies are "
                "made of its own studies"
            )


def _check_new(new: NewTransfer, policy: PolicySnapshot) -> None:
    if new.destination_pk not in policy.institutions:
        raise InvalidQuery("unknown destination institution")
    if new.destination_pk == new.sender_pk:
        raise InvalidQuery("a transfer goes to another institution")
    if new.node_pk is not None:
        node = policy.nodes.get(new.node_pk)
        if node is None or node.institution_pk != new.destination_pk:
            raise InvalidQuery("the node is not one of the destination institution's")
    if len(new.note) > NOTE_MAX_CHARS:
        raise InvalidQuery(f"the note may have at most {NOTE_MAX_CHARS} characters")
    if len(new.reports) > MAX_REPORTS:
        raise InvalidQuery(f"a transfer carries at most {MAX_REPORTS} reports")


def may_send_for(actor: Actor, institution_pk: int, policy: PolicySnapshot) -> Decision:
    resource = Resource.institution(institution_pk)
    return decide(actor.principal, Action.TRANSFER, resource, actor.context, policy)


def create_transfer(
    archive: Archive, actor: Actor, new: NewTransfer, policy: PolicySnapshot
) -> Transfer:
    """A draft, with its studies and reports; `send_transfer` sends it. With a profile, the
    job that makes the copies is queued with it (in the same transaction)."""
    decision = may_send_for(actor, new.sender_pk, policy)
    if not decision.allowed:
        raise Forbidden(decision.reason)
    _check_new(new, policy)
    if new.profile is not None:
        try:
            find_profile(archive.engine, new.sender_pk, new.profile)
        except ProfileNotFound as error:
            raise InvalidQuery(str(error)) from None
    studies = check_studies(archive, actor, new.studies)
    if new.profile is not None:
        if not studies:
            raise InvalidQuery("name the studies to copy")
        check_own_studies(archive, actor, studies, new.sender_pk)
    with Session(archive.engine, expire_on_commit=False) as session:
        transfer = Transfer(
            study_instance_uid=studies[0] if studies and new.profile is None else "",
            sender_institution_pk=new.sender_pk,
            destination_institution_pk=new.destination_pk,
            destination_node_pk=new.node_pk,
            status=TransferStatus.DRAFT.value,
            instances=0,
            created_at=actor.now,
            last_instance_at=actor.now,
            origin=Origin.PERSON.value,
            priority=Priority(new.priority).value,
            note=new.note,
            created_by=actor.label[:256],
            pseudonymised_with=new.profile,
        )
        session.add(transfer)
        session.flush()
        if new.profile is None:
            for uid in studies:
                session.add(TransferStudy(transfer_pk=transfer.pk or 0, study_instance_uid=uid))
        for title, text in new.reports:
            session.add(TransferReport(transfer_pk=transfer.pk or 0, title=title, text=text))
        note_change(
            session, transfer.pk or 0, TransferStatus.DRAFT, actor=actor.label, reason="created",
            now=actor.now,
        )  # fmt: skip
        if new.profile is not None:
            _queue_copies(session, actor, transfer, new, studies)
        session.commit()
    # A draft of copies names no original here: the receiver reads its transfer's events, and
    # the originals are in the sender's `pseudonymise` events only (exchange.pseudonymisation).
    named = studies if new.profile is None else []
    audit_step(archive.engine, actor, transfer, "transfer", decision, step="draft", studies=named)
    return transfer


def _queue_copies(
    session: Session, actor: Actor, transfer: Transfer, new: NewTransfer, originals: list[str]
) -> None:
    then = "; sent when they are in" if new.send_when_copied else ""
    reason = (f"making pseudonymised copies of {len(originals)} studies with profile "
              f"{new.profile}{then}")  # fmt: skip
    note_change(session, transfer.pk or 0, TransferStatus.DRAFT, actor=actor.label,
                reason=reason[:1024], now=actor.now)  # fmt: skip
    payload = {"transfer": transfer.public_id, "profile": new.profile, "studies": originals,
               "send": new.send_when_copied, **actor_payload(actor)}  # fmt: skip
    enqueue(session.connection(), PSEUDONYMISE_FOR_TRANSFER, payload, now=actor.now)


def open_draft(engine: Engine, actor: Actor, public_id: str) -> Transfer:
    """A draft the actor may add to (STOW-RS into a transfer), or a refusal."""
    transfer = require(engine, actor, Action.TRANSFER, public_id, side="sender")
    if transfer.status != TransferStatus.DRAFT:
        _refuse(engine, actor, transfer, "transfer", Conflict("only a draft takes new studies"))
    if transfer.pseudonymised_with is not None:
        own = Conflict("a transfer of pseudonymised copies takes only the copies Ferry makes")
        _refuse(engine, actor, transfer, "transfer", own)
    return transfer


def add_studies(engine: Engine, transfer: Transfer, uids: Sequence[str]) -> None:
    """Studies stored into a draft (already checked: the actor just stored them)."""
    with Session(engine) as session:
        known = set(study_uids(session, transfer)) if transfer.pk else set()
        for uid in dict.fromkeys(uids):
            if uid not in known:
                session.add(TransferStudy(transfer_pk=transfer.pk or 0, study_instance_uid=uid))
        if not transfer.study_instance_uid and uids:
            stored = session.get(Transfer, transfer.pk)
            if stored is not None and not stored.study_instance_uid:
                stored.study_instance_uid = uids[0]
                session.add(stored)
        session.commit()


# -- sending --------------------------------------------------------------------------------


def send_transfer(
    archive: Archive,
    actor: Actor,
    public_id: str,
    policy: PolicySnapshot,
    enqueue_forward: EnqueueForward,
    *,
    by_filling_job: bool = False,
) -> Transfer:
    """Decides the destination now; allowed, grants and (for a node) queues the deliveries.
    A draft that a job is still filling is sent by that job, not by hand (409)."""
    engine = archive.engine
    transfer = require(engine, actor, Action.TRANSFER, public_id, side="sender")
    if transfer.status != TransferStatus.DRAFT:
        _refuse(engine, actor, transfer, "transfer", Conflict(f"the transfer is {transfer.status}"))
    if not by_filling_job and _being_filled(engine, public_id):
        busy = Conflict("studies are still being added to this draft: it is sent once they are in")
        _refuse(engine, actor, transfer, "transfer", busy)
    return _dispatch(archive, actor, transfer, policy, enqueue_forward)


def _being_filled(engine: Engine, public_id: str) -> bool:
    queue = JobQueue(engine)
    return any(queue.underway(kind, "transfer", public_id) for kind in DRAFT_FILLING_JOBS)


def _dispatch(
    archive: Archive,
    actor: Actor,
    transfer: Transfer,
    policy: PolicySnapshot,
    enqueue_forward: EnqueueForward,
) -> Transfer:
    engine = archive.engine
    with Session(engine) as session:
        studies = study_uids(session, transfer)
    if not studies:
        _refuse(engine, actor, transfer, "transfer", InvalidQuery("the transfer has no studies"))
    if any(archive.read_study_access(uid) is None for uid in studies):
        gone = InvalidQuery("a study of the transfer is no longer in the archive")
        _refuse(engine, actor, transfer, "transfer", gone)
    requested = Target(transfer.destination_node_pk)
    decision, target = decide_route(
        actor.principal,
        transfer.sender_institution_pk,
        transfer.destination_institution_pk,
        requested,
        actor.now,
        policy,
        pseudonymised=transfer.pseudonymised_with is not None,
    )
    if not decision.allowed:
        audit_step(engine, actor, transfer, "transfer", decision, destination=requested.label)
        raise Forbidden(decision.reason)
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(Transfer, transfer.pk)
        assert stored is not None
        stored.sent_at, stored.destination_node_pk = actor.now, target.node_pk
        change_status(
            session, stored, TransferStatus.SENT, actor=actor.label, reason=decision.reason,
            now=actor.now,
        )  # fmt: skip
        _grant(session, stored, studies, actor)
        if target.node_pk is None:
            status = TransferStatus.ON_WORKLIST
        else:
            _queue(session, stored, studies, target.node_pk, actor, enqueue_forward)
            status = TransferStatus.DELIVERING
        change_status(
            session, stored, status, actor=actor.label, reason=decision.reason, now=actor.now
        )
        if status is TransferStatus.ON_WORKLIST:  # a node delivery tells when it is delivered
            notify_transfer(session.connection(), stored, status, actor.now)
        session.commit()
    audit_step(engine, actor, stored, "transfer", decision, destination=target.label)
    return stored


def _grant(session: Session, transfer: Transfer, studies: Sequence[str], actor: Actor) -> None:
    for uid in studies:
        with contextlib.suppress(DuplicateRecord, InvalidRecord):  # already granted, or its own
            add_grant(
                session,
                uid,
                transfer.destination_institution_pk,
                now=actor.now,
                reason=_grant_reason(transfer),
            )


def _queue(
    session: Session,
    transfer: Transfer,
    studies: Sequence[str],
    node_pk: int,
    actor: Actor,
    enqueue_forward: EnqueueForward,
) -> None:
    rows = session.exec(select(TransferStudy).where(TransferStudy.transfer_pk == transfer.pk))
    by_study = {row.study_instance_uid: row for row in rows}
    for uid in studies:
        job_pk = enqueue_forward(
            session.connection(),
            study_uid=uid,
            node_pk=node_pk,
            now=actor.now,
            transfer_pk=transfer.pk,
            requested_by=actor.label,
        )
        transfer.job_pk = job_pk
        if uid in by_study:
            by_study[uid].job_pk = job_pk
            session.add(by_study[uid])
    session.add(transfer)


def resend_transfer(
    archive: Archive,
    actor: Actor,
    public_id: str,
    policy: PolicySnapshot,
    enqueue_forward: EnqueueForward,
) -> Transfer:
    """A failed or partial delivery, sent again (the destination rules are asked again)."""
    engine = archive.engine
    transfer = require(engine, actor, Action.TRANSFER, public_id, side="sender")
    if transfer.status not in RESENDABLE:
        error = Conflict(
            f"only a failed or partial transfer is resent; this one is {transfer.status}"
        )
        _refuse(engine, actor, transfer, "transfer", error)
    return _dispatch(archive, actor, transfer, policy, enqueue_forward)


# -- withdrawing and returning --------------------------------------------------------------


def cancel_transfer(engine: Engine, actor: Actor, public_id: str, reason: str = "") -> Transfer:
    """The sender withdraws a transfer nobody has downloaded; the grants it gave are revoked."""
    transfer = require(engine, actor, Action.TRANSFER, public_id, side="sender")
    if transfer.status not in CANCELLABLE:
        _refuse(engine, actor, transfer, "transfer", Conflict(_why_not_cancel(transfer)))
    return _close(engine, actor, transfer, TransferStatus.CANCELLED, reason or "cancelled")


def _why_not_cancel(transfer: Transfer) -> str:
    if transfer.status == TransferStatus.DOWNLOADED:
        return "the receiver has downloaded this transfer: it can no longer be cancelled"
    if transfer.status == TransferStatus.DELIVERING:
        return "a delivery of this transfer is under way: wait for it to end"
    return f"a transfer that is {transfer.status} cannot be cancelled"


def return_transfer(engine: Engine, actor: Actor, public_id: str, reason: str) -> Transfer:
    """The receiver sends a transfer back, with a reason; its grants are revoked."""
    transfer = require(engine, actor, Action.READ_METADATA, public_id, side="receiver")
    if not reason.strip():
        raise InvalidQuery("say why the transfer is returned")
    if transfer.status not in RETURNABLE:
        error = Conflict(f"a transfer that is {transfer.status} cannot be returned")
        _refuse(engine, actor, transfer, "transfer", error)
    return _close(engine, actor, transfer, TransferStatus.RETURNED, reason)


def _close(
    engine: Engine, actor: Actor, transfer: Transfer, status: TransferStatus, reason: str
) -> Transfer:
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(Transfer, transfer.pk)
        assert stored is not None
        stored.completed_at = actor.now
        change_status(session, stored, status, actor=actor.label, reason=reason, now=actor.now)
        _revoke(session, stored, actor)
        session.commit()
    allowed = Decision(True, "transfer-party", reason)
    audit_step(engine, actor, stored, "transfer", allowed, step=status.value)
    return stored


def _revoke(session: Session, transfer: Transfer, actor: Actor) -> None:
    """Only the grants this transfer gave: another transfer's grant on a study stands."""
    for uid in study_uids(session, transfer):
        study = session.exec(select(Study).where(Study.study_instance_uid == uid)).first()
        if study is None:
            continue
        query = live_grants(study.pk or 0, transfer.destination_institution_pk, actor.now)
        for grant in session.exec(query.where(StudyGrant.reason == _grant_reason(transfer))):
            grant.revoked_at = actor.now
            session.add(grant)


def mark_done(engine: Engine, actor: Actor, public_id: str) -> Transfer:
    """The receiver is done with the worklist item (its state is kept)."""
    transfer = require(engine, actor, Action.READ_METADATA, public_id, side="receiver")
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(Transfer, transfer.pk)
        assert stored is not None
        stored.done_at = actor.now
        session.add(stored)
        status = TransferStatus(stored.status)
        note_change(session, stored.pk or 0, status, actor=actor.label, reason="marked done",
                    now=actor.now)  # fmt: skip
        session.commit()
    return stored


def note_received(engine: Engine, actor: Actor, transfer: Transfer, status: TransferStatus) -> None:
    """The receiver viewed or downloaded it: on-worklist -> viewed -> downloaded, never back."""
    order = [TransferStatus.ON_WORKLIST, TransferStatus.VIEWED, TransferStatus.DOWNLOADED]
    current = TransferStatus(transfer.status)
    moves = current in order and order.index(status) > order.index(current)
    moves = moves or (current == TransferStatus.DELIVERED and status == TransferStatus.DOWNLOADED)
    with Session(engine) as session:
        stored = session.get(Transfer, transfer.pk)
        if stored is None:
            return
        if moves:
            change_status(session, stored, status, actor=actor.label, reason="", now=actor.now)
        else:
            note_change(session, stored.pk or 0, status, actor=actor.label, reason="again",
                        now=actor.now)  # fmt: skip
        session.commit()
