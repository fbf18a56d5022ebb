"""Routing pushed studies: once quiet, each collecting transfer is decided and carried out.

The sender is the node that pushed the study, acting for its institution with the rights it
has now (a node without the right to write may not transfer). Where the study goes is the
policy's answer: a destination rule's obligation names the worklist or a node, which out of
core hours may differ from the route's own destination. Allowed, the destination institution is
granted the study and, for a node, a forwarding job is queued, in the transaction that moves the
transfer on; denied, the transfer is refused with the policy's reason. A conditional claim lets
any number of workers sweep at once and still settle each transfer once.

`exchange` must not know the DIMSE edge: the composition root passes in the function that
queues a forwarding job (`dimse.forward.enqueue_forward`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, Engine, update
from sqlmodel import Session, col, select

from archive.store import Archive, StudyAccess
from exchange.grants import add_grant
from exchange.history import note_change
from exchange.models import Transfer, TransferStatus
from exchange.transfers import FINAL, audit_transfer, notify_transfer
from foundation.clock import Clock
from policy.decision import Context, Decision, PolicySnapshot, Resource, decide
from policy.models import Route
from policy.principal import Principal, node_principal
from policy.roles import Action
from policy.store import DuplicateRecord, InvalidRecord, UnknownRecord, snapshot
from policy.store.destinations import find_node

log = logging.getLogger(__name__)

ROUTE_TO = "route-to:"


@dataclass(frozen=True)
class Target:
    """Where a transfer goes inside the destination institution."""

    node_pk: int | None  # None: the institution's worklist

    @property
    def label(self) -> str:
        return "worklist" if self.node_pk is None else f"node:{self.node_pk}"


def target_of(decision: Decision, requested: Target) -> Target:
    """The obligation's destination; without one (an unrestricted destination) the one asked for."""
    for obligation in decision.obligations:
        if not obligation.startswith(ROUTE_TO):
            continue
        where = obligation.removeprefix(ROUTE_TO)
        if where == "worklist":
            return Target(None)
        if where.startswith("node:") and where.removeprefix("node:").isdigit():
            return Target(int(where.removeprefix("node:")))
    return requested


def sender_principal(
    engine: Engine, calling_ae_title: str, sender_institution_pk: int
) -> Principal | None:
    """The pushing node as it is now (its rights may have changed since it sent)."""
    try:
        node = find_node(engine, calling_ae_title)
    except UnknownRecord:
        return None
    return node_principal(node) if node.institution_pk == sender_institution_pk else None


def decide_route(
    principal: Principal | None,
    sender_institution_pk: int,
    destination_institution_pk: int,
    requested: Target,
    now: datetime,
    policy: PolicySnapshot,
    *,
    pseudonymised: bool = False,
) -> tuple[Decision, Target]:
    """The policy's decision on sending there now (the studies themselves, or pseudonymised
    copies), and where the study then goes."""
    if principal is None:
        reason = f"the sending node is no longer a node of institution {sender_institution_pk}"
        return Decision(False, "unknown-node", reason), requested
    resource = Resource.destination(
        destination_institution_pk, requested.node_pk, sender_institution_pk, pseudonymised
    )
    decision = decide(principal, Action.TRANSFER, resource, Context(now), policy)
    return decision, target_of(decision, requested) if decision.allowed else requested


class EnqueueForward(Protocol):
    """Queues a forwarding job in the caller's transaction; returns the job's pk."""

    def __call__(
        self,
        connection: Connection,
        *,
        study_uid: str,
        node_pk: int,
        now: datetime,
        transfer_pk: int | None = None,
        requested_by: str = "",
    ) -> int: ...


SnapshotFn = Callable[[Engine], PolicySnapshot]


def settle_due(
    archive: Archive,
    now: datetime,
    enqueue_forward: EnqueueForward,
    snapshot_fn: SnapshotFn = snapshot,
) -> int:
    """Decides every collecting transfer whose route's quiet time has passed; returns how many."""
    due = _due(archive.engine, now)
    if not due:
        return 0
    policy = snapshot_fn(archive.engine)
    settled = 0
    for transfer, route in due:
        try:
            settled += _settle(archive, transfer, route, now, policy, enqueue_forward)
        except Exception:  # one broken transfer must not hold back the others
            log.exception("could not settle transfer %s", transfer.pk)
    return settled


def transfer_sweeper(
    archive: Archive,
    clock: Clock,
    enqueue_forward: EnqueueForward,
    snapshot_fn: SnapshotFn = snapshot,
) -> Callable[[], int]:
    """A periodic tick for `foundation.jobs.Worker(ticks=[...])`."""

    def sweep() -> int:
        return settle_due(archive, clock(), enqueue_forward, snapshot_fn)

    return sweep


def _due(engine: Engine, now: datetime) -> list[tuple[Transfer, Route]]:
    query = (
        select(Transfer, Route)
        .join(Route, col(Route.pk) == col(Transfer.route_pk))
        .where(Transfer.status == TransferStatus.COLLECTING.value, Transfer.last_instance_at <= now)
        .order_by(col(Transfer.last_instance_at), col(Transfer.pk))
    )
    with Session(engine, expire_on_commit=False) as session:
        rows = [(transfer, route) for transfer, route in session.exec(query)]
    return [
        (transfer, route)
        for transfer, route in rows
        if transfer.last_instance_at + timedelta(seconds=route.quiet_seconds) <= now
    ]


@dataclass(frozen=True)
class _Verdict:
    decision: Decision
    target: Target
    status: TransferStatus
    actor: str
    access: StudyAccess | None


def _settle(
    archive: Archive,
    transfer: Transfer,
    route: Route,
    now: datetime,
    policy: PolicySnapshot,
    enqueue_forward: EnqueueForward,
) -> int:
    verdict = _judge(archive, transfer, route, now, policy)
    with Session(archive.engine) as session:
        if not _claim(session, transfer, route, verdict, now):
            return 0  # extended by a late instance, or settled by another worker
        job_pk = _carry_out(session, transfer, verdict, now, enqueue_forward)
        notify_transfer(session.connection(), transfer, verdict.status, now)
        note_change(
            session,
            transfer.pk or 0,
            verdict.status,
            actor=verdict.actor,
            reason=verdict.decision.reason,
            now=now,
        )
        session.commit()
    access = verdict.access
    audit_transfer(
        archive.engine,
        transfer,
        verdict.status,
        verdict.decision,
        actor=verdict.actor,
        patient=(access.patient_id, access.accession_number) if access else ("", ""),
        destination=verdict.target.label,
        route=route.called_ae_title,
        job=job_pk,
    )
    return 1


def _judge(
    archive: Archive, transfer: Transfer, route: Route, now: datetime, policy: PolicySnapshot
) -> _Verdict:
    requested = Target(route.destination_node_pk)
    sender = transfer.sender_institution_pk
    principal = sender_principal(archive.engine, transfer.calling_ae_title, sender)
    actor = principal.label if principal else f"ae:{transfer.calling_ae_title}"
    access = archive.read_study_access(transfer.study_instance_uid)
    if access is None:
        gone = Decision(False, "study-gone", "the study is no longer in the archive")
        return _Verdict(gone, requested, TransferStatus.FAILED, actor, None)
    destination = route.destination_institution_pk
    decision, target = decide_route(principal, sender, destination, requested, now, policy)
    if not decision.allowed:
        status = TransferStatus.REFUSED
    elif target.node_pk is None:
        status = TransferStatus.ON_WORKLIST
    else:
        status = TransferStatus.DELIVERING
    return _Verdict(decision, target, status, actor, access)


def _claim(
    session: Session, transfer: Transfer, route: Route, verdict: _Verdict, now: datetime
) -> bool:
    """Moves the transfer on only if it is still collecting and no instance came since."""
    cutoff = now - timedelta(seconds=route.quiet_seconds)
    claimed = session.execute(
        update(Transfer)
        .where(
            col(Transfer.pk) == transfer.pk,
            col(Transfer.status) == TransferStatus.COLLECTING.value,
            col(Transfer.last_instance_at) <= cutoff,
        )
        .values(
            status=verdict.status.value,
            reason=verdict.decision.reason[:1024],
            destination_node_pk=verdict.target.node_pk,
            completed_at=now if verdict.status in FINAL else None,
        )
    )
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def _carry_out(
    session: Session,
    transfer: Transfer,
    verdict: _Verdict,
    now: datetime,
    enqueue_forward: EnqueueForward,
) -> int | None:
    """The grant and, for a node, the forwarding job; returns the job's pk."""
    if not verdict.decision.allowed:
        return None
    with contextlib.suppress(DuplicateRecord, InvalidRecord):  # already granted, or its own
        add_grant(
            session,
            transfer.study_instance_uid,
            transfer.destination_institution_pk,
            now=now,
            reason=f"transfer {transfer.pk}",
        )
    node_pk = verdict.target.node_pk
    if node_pk is None:
        return None
    job_pk = enqueue_forward(
        session.connection(),
        study_uid=transfer.study_instance_uid,
        node_pk=node_pk,
        now=now,
        transfer_pk=transfer.pk,
        requested_by=verdict.actor,
    )
    session.execute(update(Transfer).where(col(Transfer.pk) == transfer.pk).values(job_pk=job_pk))
    return job_pk
