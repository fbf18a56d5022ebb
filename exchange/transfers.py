"""Transfers: a study going from one institution to another's worklist or one of its nodes.

Direct push: a node sends to a route's called AE title; each study becomes one transfer that
collects instances (`note_arrivals`: one upsert per study on a partial unique index, so two
associations delivering one study at once extend one transfer) until none has arrived for the
route's quiet time. `exchange.routing.settle_due` then decides where it goes; a forwarding job
reports back through `mark_delivery`. Every step is audited (`audit_transfer`), and the steps
people hear of queue their emails in the same transaction (`notify_transfer`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, or_, select

from archive.models import Patient, Study
from audit.trail import AuditRecord, record
from exchange.history import record_change
from exchange.models import (
    ENDED_BY_RETENTION,
    UNTAKEN,
    Transfer,
    TransferStatus,
    TransferStudy,
)
from exchange.notifications import Event, EventKind, Subject, notify
from policy.decision import Decision
from policy.models import Route
from policy.store import UnknownRecord

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "ferry"  # deliveries are reported by Ferry's own jobs, as the forward job audits

_COLLECTING = text("status = 'collecting'")  # the predicate of uq_transfer_collecting
FINAL = frozenset(
    {
        TransferStatus.REFUSED,
        TransferStatus.ON_WORKLIST,
        TransferStatus.DELIVERED,
        TransferStatus.FAILED,
    }
)  # PARTIAL is not: the forwarding job retries the rest; parked, the transfer is FAILED
_OUTCOMES = {
    TransferStatus.ON_WORKLIST: "allowed",
    TransferStatus.DELIVERING: "allowed",
    TransferStatus.DELIVERED: "allowed",
    TransferStatus.REFUSED: "denied",
}


# -- collecting -----------------------------------------------------------------------------


def note_arrivals(
    engine: Engine,
    route_pk: int,
    sender_institution_pk: int,
    calling_ae_title: str,
    arrived: Mapping[str, int],
    now: datetime,
) -> None:
    """Studies that arrived on a route: start or extend their collecting transfers."""
    if not arrived:
        return
    with engine.begin() as connection:
        route = connection.execute(
            select(Route.destination_institution_pk, Route.destination_node_pk).where(
                Route.pk == route_pk
            )
        ).first()
        if route is None:
            log.warning("route %s vanished while %s sent to it", route_pk, calling_ae_title)
            return
        for study_uid, count in sorted(arrived.items()):
            values = {
                "study_instance_uid": study_uid,
                "sender_institution_pk": sender_institution_pk,
                "destination_institution_pk": route.destination_institution_pk,
                "destination_node_pk": route.destination_node_pk,
                "route_pk": route_pk,
                "calling_ae_title": calling_ae_title,
                "status": TransferStatus.COLLECTING.value,
                "reason": "",
                "instances": count,
                "created_at": now,
                "last_instance_at": now,
            }
            connection.execute(_collect(connection.dialect.name, values))


def _collect(dialect: str, values: dict[str, Any]) -> Any:
    """INSERT, or on the collecting transfer of this route and study, add to it (one statement)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Transfer).values(**values)
    return statement.on_conflict_do_update(
        index_elements=["route_pk", "study_instance_uid"],
        index_where=_COLLECTING,
        set_={
            "instances": col(Transfer.instances) + statement.excluded.instances,
            "last_instance_at": statement.excluded.last_instance_at,
        },
    )


# -- delivery -------------------------------------------------------------------------------


def mark_delivery(
    engine: Engine,
    transfer_pk: int,
    status: str,
    reason: str,
    now: datetime,
    study_uid: str = "",
) -> None:
    """A forwarding job reports how the delivery of a transfer went (a TransferStatus value);
    the audit event names the job's study (`study_uid`), else the transfer's first."""
    new = TransferStatus(status)
    with Session(engine, expire_on_commit=False) as session:
        transfer = session.get(Transfer, transfer_pk)
        if transfer is None:
            raise UnknownRecord(f"no transfer {transfer_pk}")
        previous = TransferStatus(transfer.status)
        transfer.status = new.value
        transfer.reason = reason[:1024]
        transfer.completed_at = now if new in FINAL else None
        session.add(transfer)
        notify_transfer(session.connection(), transfer, new, now, previous)
        session.commit()
        record_change(engine, transfer_pk, new, SYSTEM_ACTOR, reason, now)
        facts = session.exec(
            select(Patient.patient_id, Study.accession_number)
            .join(Study, col(Study.patient_pk) == col(Patient.pk))
            .where(Study.study_instance_uid == (study_uid or transfer.study_instance_uid))
        ).first()
    node = transfer.destination_node_pk
    audit_transfer(
        engine,
        transfer,
        new,
        Decision(True, "delivery", reason),
        actor=SYSTEM_ACTOR,
        patient=(facts[0], facts[1]) if facts else ("", ""),
        study_uid=study_uid,
        destination="worklist" if node is None else f"node:{node}",
        job=transfer.job_pk,
    )


def delivery_jobs(engine: Engine, transfer_pk: int) -> dict[str, int]:
    """The studies of a transfer made by people that were queued for a node: their forwarding
    jobs, by Study Instance UID (a pushed transfer has none: its one study is on the row)."""
    with Session(engine) as session:
        rows = session.exec(
            select(TransferStudy.study_instance_uid, TransferStudy.job_pk).where(
                TransferStudy.transfer_pk == transfer_pk, col(TransferStudy.job_pk).is_not(None)
            )
        ).all()
    return {uid: job_pk for uid, job_pk in rows if job_pk is not None}


def note_delivery(engine: Engine, transfer_pk: int, reason: str, now: datetime) -> None:
    """One study of several delivered, the others still on their way: a history row, the
    transfer's status unchanged (it is delivered when the last study is)."""
    with Session(engine) as session:
        transfer = session.get(Transfer, transfer_pk)
        if transfer is None:
            raise UnknownRecord(f"no transfer {transfer_pk}")
        status = TransferStatus(transfer.status)
    record_change(engine, transfer_pk, status, SYSTEM_ACTOR, reason, now)


_FAILED = frozenset(
    {TransferStatus.REFUSED, TransferStatus.FAILED, TransferStatus.NEEDS_RECONCILIATION}
)


def transfer_events(
    transfer: Transfer, status: TransferStatus, previous: TransferStatus | None = None
) -> list[Event]:
    """What people are told when a transfer reaches `status`: arrivals to the receiving
    institution, how the delivery went to the sending one (a partial delivery once), and to the
    sending one a transfer that ran out (expired or deleted, `previous` saying where it stood)
    before anyone at the receiver took it."""
    assert transfer.pk is not None
    subject = Subject("transfer", transfer.pk)
    sender, receiver = transfer.sender_institution_pk, transfer.destination_institution_pk
    kinds: list[tuple[EventKind, int, int]] = []
    if status in (TransferStatus.ON_WORKLIST, TransferStatus.DELIVERED):
        kinds.append((EventKind.TRANSFER_ARRIVED, receiver, sender))
    if status is TransferStatus.DELIVERED:
        kinds.append((EventKind.TRANSFER_DELIVERED, sender, receiver))
    if status is TransferStatus.PARTIAL and previous is not TransferStatus.PARTIAL:
        kinds.append((EventKind.TRANSFER_PARTLY_DELIVERED, sender, receiver))
    if status in _FAILED:
        kinds.append((EventKind.TRANSFER_FAILED, sender, receiver))
    if status in ENDED_BY_RETENTION and previous in UNTAKEN:
        kinds.append((EventKind.TRANSFER_EXPIRED, sender, receiver))
    return [Event(kind, pk, subject, counterpart_pk=other) for kind, pk, other in kinds]


def notify_transfer(
    connection: Connection,
    transfer: Transfer,
    status: TransferStatus,
    now: datetime,
    previous: TransferStatus | None = None,
) -> None:
    """Queue the emails of a transfer's new state inside the caller's transaction."""
    for event in transfer_events(transfer, status, previous):
        notify(connection, event, now=now)


def audit_transfer(
    engine: Engine,
    transfer: Transfer,
    status: TransferStatus,
    decision: Decision,
    *,
    actor: str,
    patient: tuple[str, str],
    study_uid: str = "",
    **detail: Any,
) -> None:
    """One step of a transfer: decided (as the sending node) or delivered (as Ferry)."""
    record(
        engine,
        AuditRecord(
            action="transfer",
            outcome=_OUTCOMES.get(status, "failed"),
            actor=actor,
            actor_kind="system" if actor == SYSTEM_ACTOR else actor.partition(":")[0],
            institution_pk=transfer.sender_institution_pk,
            rule=decision.rule,
            reason=decision.reason,
            study_uid=study_uid or transfer.study_instance_uid,
            patient_id=patient[0],
            accession_number=patient[1],
            transaction=transfer.public_id or "",
            detail={
                "protocol": "dimse",
                "transfer": transfer.pk,
                "status": status.value,
                "calling_ae": transfer.calling_ae_title,
                "destination_institution": transfer.destination_institution_pk,
                "instances": transfer.instances,
                **detail,
            },
        ),
    )


def public_id_of(engine: Engine, transfer_pk: int) -> str:
    """A transfer's opaque id, the audit trail's transaction; "" once the transfer is gone."""
    with Session(engine) as session:
        transfer = session.get(Transfer, transfer_pk)
    return transfer.public_id if transfer is not None else ""


# -- listing --------------------------------------------------------------------------------


def list_transfers(
    engine: Engine,
    institution_pks: Collection[int] | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[Transfer]:
    """Newest first; with institutions, the transfers they sent or receive (all when None)."""
    query = select(Transfer).order_by(col(Transfer.pk).desc()).limit(limit)
    if institution_pks is not None:
        pks = list(institution_pks)
        query = query.where(
            or_(
                col(Transfer.sender_institution_pk).in_(pks),
                col(Transfer.destination_institution_pk).in_(pks),
            )
        )
    if status is not None:
        query = query.where(Transfer.status == TransferStatus(status).value)
    with Session(engine) as session:
        rows = list(session.exec(query))
        for row in rows:
            session.expunge(row)
    return rows
