"""The receiver's side of a transfer: which studies it may read or download, and delivery of
them to one of its own nodes (a forwarding job per study, reporting back on the transfer)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, exists, or_
from sqlmodel import Session, col, select

from archive.store import Archive
from exchange.history import change_status
from exchange.models import Transfer, TransferStatus, TransferStudy
from exchange.parties import Actor, audit_step, require, study_uids
from exchange.routing import EnqueueForward
from foundation.errors import Conflict, Forbidden, InvalidQuery, NotFound
from policy.decision import Decision, Resource, decide
from policy.models import Node
from policy.roles import Action

DELIVERABLE = frozenset(
    {
        TransferStatus.ON_WORKLIST,
        TransferStatus.VIEWED,
        TransferStatus.DOWNLOADED,
        TransferStatus.DELIVERED,
        TransferStatus.PARTIAL,
        TransferStatus.FAILED,
    }
)


def selected_studies(archive: Archive, transfer: Transfer, wanted: Sequence[str]) -> list[str]:
    """The transfer's studies, or those of them asked for; a study not in it is not found."""
    with Session(archive.engine) as session:
        studies = study_uids(session, transfer)
    if not wanted:
        return studies
    for uid in wanted:
        if uid not in studies:
            raise NotFound(f"the transfer holds no study {uid[:64]!r}")
    return list(dict.fromkeys(wanted))


def received_transfer_of(engine: Engine, actor: Actor, study_uid: str) -> Transfer:
    """The newest transfer holding the study that the actor's institutions received and may
    download from now; NotFound, as for any transfer one may not see, when there is none."""
    received = list(actor.principal.institutions_for(Action.DOWNLOAD))
    listed = exists().where(
        col(TransferStudy.transfer_pk) == Transfer.pk,
        col(TransferStudy.study_instance_uid) == study_uid,
    )
    query = (
        select(Transfer)
        .where(col(Transfer.destination_institution_pk).in_(received))
        .where(col(Transfer.status).in_([s.value for s in DELIVERABLE]))
        .where(or_(listed, col(Transfer.study_instance_uid) == study_uid))
        .order_by(col(Transfer.pk).desc())
    )
    with Session(engine) as session:
        found = session.exec(query).first()
    if found is None or actor.principal.studies is not None:
        raise NotFound(f"no transfer to your institutions holds study {study_uid[:64]!r}")
    return require(engine, actor, Action.DOWNLOAD, found.public_id, side="receiver")


def check_study_action(
    archive: Archive, actor: Actor, transfer: Transfer, action: Action, studies: Sequence[str]
) -> Decision:
    """Each study decided for `action` (owner or grant); the first refusal is audited and raised."""
    decision = Decision(False, "no-studies", "the transfer has no studies")
    for uid in studies:
        access = archive.read_study_access(uid)
        if access is None:
            raise NotFound(f"study {uid[:64]} is no longer in the archive")
        resource = Resource.study_from_rows(uid, access.institution_pk, access.grants)
        decision = decide(actor.principal, action, resource, actor.context)
        if not decision.allowed:
            audit_step(archive.engine, actor, transfer, action.value, decision, studies=[uid])
            raise Forbidden(decision.reason)
    if not studies:
        raise InvalidQuery(decision.reason)
    return decision


def deliver_to_node(
    archive: Archive,
    actor: Actor,
    public_id: str,
    ae_title: str,
    enqueue_forward: EnqueueForward,
    wanted: Sequence[str] = (),
) -> Transfer:
    """The receiver downloads the transfer (or the `wanted` studies of it) to one of its own
    nodes."""
    engine = archive.engine
    transfer = require(engine, actor, Action.DOWNLOAD, public_id, side="receiver")
    studies = selected_studies(archive, transfer, wanted)
    decision = check_study_action(archive, actor, transfer, Action.DOWNLOAD, studies)
    with Session(engine, expire_on_commit=False) as session:
        node = session.exec(select(Node).where(Node.ae_title == ae_title)).first()
        if node is None or node.institution_pk != transfer.destination_institution_pk:
            raise InvalidQuery(f"the receiving institution has no node {ae_title[:16]!r}")
        if not node.can_write:
            raise InvalidQuery(f"node {ae_title} takes no deliveries (it has no write right)")
        stored = session.get(Transfer, transfer.pk)
        assert stored is not None
        if TransferStatus(stored.status) not in DELIVERABLE:
            error = Conflict(f"a transfer that is {stored.status} cannot be delivered")
            audit_step(
                engine, actor, stored, "download", Decision(False, "transfer-state", str(error))
            )
            raise error
        rows = {
            row.study_instance_uid: row
            for row in session.exec(
                select(TransferStudy).where(TransferStudy.transfer_pk == stored.pk)
            )
        }
        for uid in studies:
            job_pk = enqueue_forward(
                session.connection(),
                study_uid=uid,
                node_pk=node.pk or 0,
                now=actor.now,
                transfer_pk=stored.pk,
                requested_by=actor.label,
            )
            stored.job_pk = job_pk
            if uid in rows:
                rows[uid].job_pk = job_pk
                session.add(rows[uid])
        stored.destination_node_pk = node.pk
        stored.completed_at = None
        reason = f"to node {node.ae_title}, requested by the receiver"
        change_status(
            session, stored, TransferStatus.DELIVERING, actor=actor.label, reason=reason,
            now=actor.now,
        )  # fmt: skip
        session.commit()
    audit_step(engine, actor, stored, "download", decision, studies=studies,
               destination=f"node:{node.pk}")  # fmt: skip
    return stored
