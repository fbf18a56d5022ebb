"""The transfers JSON API under `/api`: destinations, transfers, the worklist, viewing, downloads.

Handlers turn a request into an `exchange.parties.Actor` and call the exchange's workflows,
which decide (policy `decide`), audit and raise domain errors; the status table at the edge
turns those into 400, 403, 404 and 409. Transfers are named by their opaque id only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from archive.store import Archive
from exchange import sending
from exchange.delivered_by_hand import mark_delivered
from exchange.destinations import list_destinations, node_of
from exchange.history import read_history
from exchange.holds import frozen_studies
from exchange.models import Priority, Transfer, TransferReport, TransferStatus
from exchange.parties import Actor, decide_on, require, side_of, study_uids
from exchange.retention_defaults import RetentionDefaults
from exchange.retention_models import HoldingKind
from exchange.retention_terms import days_left, read_policy, terms_of
from exchange.worklist import WorklistQuery, describe_studies, search_worklist
from foundation.errors import Forbidden, InvalidQuery, NotFound
from policy import store
from policy.decision import PolicySnapshot, Resource, decide
from policy.roles import Action
from portal.openapi import Call, Operation, PathParameter
from portal.transfer_schemas import (
    ChangeOut,
    DestinationOut,
    DestinationsOut,
    DestinationsQuery,
    MarkDeliveredIn,
    ReasonIn,
    ReportOut,
    ReturnIn,
    StudyOut,
    TransferIn,
    TransferOut,
    TransferQuery,
    WorklistOut,
    WorklistQueryIn,
)

VIEWER_PATH = "/viewer"  # where the bundled OHIF is served (dicomweb.viewer_install)
VIEWER_TOKEN_SECONDS = 30 * 60  # long enough for a reading session, no longer
_ID_PATTERN = r"^[A-Za-z0-9_-]{8,32}$"


def _parse_id(text: str) -> str:
    if not (8 <= len(text) <= 32) or not all(c.isalnum() or c in "_-" for c in text):
        raise ValueError(text)
    return text


PARAMETERS = {
    "transfer_id": PathParameter(
        {"type": "string", "pattern": _ID_PATTERN}, _parse_id, "a transfer's opaque id"
    )
}


# --- context ---------------------------------------------------------------------------------


def _archive(call: Call) -> Archive:
    archive: Archive = call.state.archive
    return archive


def _engine(call: Call) -> Engine:
    return _archive(call).engine


def _actor(call: Call) -> Actor:
    clock: Callable[[], datetime] | None = getattr(call.state, "clock", None)
    client = call.request.client.host if call.request.client else ""
    return Actor(call.principal, clock() if clock else call.now, client, "api")


def _policy(call: Call) -> PolicySnapshot:
    return store.snapshot(_engine(call))


def _institution(call: Call, policy: PolicySnapshot, code: str) -> int:
    """An institution named by code; one the caller has no tie to answers like a missing one."""
    for pk, facts in policy.institutions.items():
        if facts.code == code and pk in call.principal.memberships:
            return pk
    raise NotFound(f"no institution {code!r}")


def _code(policy: PolicySnapshot, pk: int | None) -> str:
    facts = policy.institutions.get(pk or -1)
    return facts.code if facts else ""


def transfer_out(
    call: Call, transfer: Transfer, policy: PolicySnapshot, *, detail: bool = False
) -> TransferOut:
    engine = _engine(call)
    with Session(engine) as session:
        studies = describe_studies(session, study_uids(session, transfer))
        reports = (
            session.exec(
                select(TransferReport)
                .where(TransferReport.transfer_pk == transfer.pk)
                .order_by(col(TransferReport.pk))
            ).all()
            if detail
            else []
        )
    node = policy.nodes.get(transfer.destination_node_pk or -1)
    decision = decide_on(_actor(call), Action.SEARCH, transfer)
    return TransferOut(
        id=transfer.public_id,
        status=transfer.status,
        reason=transfer.reason,
        origin=transfer.origin,
        priority=transfer.priority,
        note=transfer.note,
        sender=_code(policy, transfer.sender_institution_pk),
        destination=_code(policy, transfer.destination_institution_pk),
        node=node.ae_title if node else None,
        created_by=transfer.created_by,
        created_at=transfer.created_at,
        sent_at=transfer.sent_at,
        completed_at=transfer.completed_at,
        done_at=transfer.done_at,
        side=side_of(decision),
        pseudonymised_with=transfer.pseudonymised_with,
        studies=[StudyOut(**{**s.__dict__, "modalities": list(s.modalities)}) for s in studies],
        reports=[ReportOut(title=r.title, text=r.text) for r in reports],
        history=[ChangeOut(**c.__dict__) for c in read_history(engine, transfer.pk or 0)]
        if detail
        else [],
    )


# --- destinations and transfers ------------------------------------------------------------


def get_destinations(call: Call) -> DestinationsOut:
    query: DestinationsQuery = call.query
    policy, actor = _policy(call), _actor(call)
    sender = _institution(call, policy, query.institution)
    decision = sending.may_send_for(actor, sender, policy)
    if not decision.allowed:
        raise Forbidden(decision.reason)
    options = list_destinations(_engine(call), call.principal, sender, actor.now, policy)
    nodes = {pk: node.ae_title for pk, node in policy.nodes.items()}
    out = [
        DestinationOut(
            institution=o.institution,
            node=o.ae_title or None,
            allowed=o.allowed,
            reason=o.reason,
            rule=o.rule,
            goes_to=(nodes.get(o.goes_to_node_pk) if o.goes_to_node_pk else "worklist")
            if o.allowed
            else None,
            pseudonymised_only=o.pseudonymised_only,
        )
        for o in options
    ]
    return DestinationsOut(
        institution=query.institution,
        at=actor.now,
        allowed=[o for o in out if o.allowed],
        left_out=[o for o in out if not o.allowed],
    )


def create_transfer(call: Call) -> TransferOut:
    body: TransferIn = call.body
    policy, actor = _policy(call), _actor(call)
    sender = _institution(call, policy, body.institution)
    destination = next(
        (pk for pk, facts in policy.institutions.items() if facts.code == body.destination), None
    )
    if destination is None:
        raise InvalidQuery(f"unknown destination institution {body.destination!r}")
    new = sending.NewTransfer(
        sender_pk=sender,
        destination_pk=destination,
        node_pk=node_of(policy, destination, body.node) if body.node else None,
        studies=body.studies,
        priority=Priority(body.priority),
        note=body.note,
        reports=[(r.title, r.text) for r in body.reports],
        profile=body.profile,
        send_when_copied=body.send,
    )
    transfer = sending.create_transfer(_archive(call), actor, new, policy)
    if body.send and body.profile is None:  # copies are sent by the job that makes them
        transfer = sending.send_transfer(
            _archive(call), actor, transfer.public_id, policy, call.state.enqueue_forward
        )
    return transfer_out(call, transfer, policy, detail=True)


def list_transfers(call: Call) -> list[TransferOut]:
    query: TransferQuery = call.query
    policy = _policy(call)
    pks = call.principal.institutions_for(Action.SEARCH)
    if query.institution is not None:
        pks = frozenset({_institution(call, policy, query.institution)}) & pks
    statement = (
        select(Transfer)
        .where(
            (col(Transfer.sender_institution_pk).in_(list(pks)))
            | (
                col(Transfer.destination_institution_pk).in_(list(pks))
                & (col(Transfer.status) != TransferStatus.DRAFT.value)
            )
        )
        .order_by(col(Transfer.pk).desc())
        .limit(query.limit)
    )
    if query.status:
        statement = statement.where(Transfer.status == query.status)
    with Session(_engine(call), expire_on_commit=False) as session:
        rows = list(session.exec(statement))
    return [transfer_out(call, row, policy) for row in rows]


def _visible(call: Call, action: Action = Action.SEARCH, side: str | None = None) -> Transfer:
    transfer = require(_engine(call), _actor(call), action, call.path["transfer_id"], side)
    if (
        transfer.status == TransferStatus.DRAFT
        and side_of(decide_on(_actor(call), action, transfer)) != "sender"
    ):
        raise NotFound(f"no transfer {call.path['transfer_id']!r}")  # a draft is the sender's
    return transfer


def get_transfer(call: Call) -> TransferOut:
    transfer = _visible(call)
    shown = transfer_out(call, transfer, _policy(call), detail=True)
    if shown.side == "receiver" and transfer.sent_at is not None:
        return _with_retention(call, transfer, shown)  # as on the worklist
    return shown


def send_transfer(call: Call) -> TransferOut:
    policy = _policy(call)
    transfer = sending.send_transfer(
        _archive(call), _actor(call), call.path["transfer_id"], policy, call.state.enqueue_forward
    )
    return transfer_out(call, transfer, policy, detail=True)


def resend_transfer(call: Call) -> TransferOut:
    policy = _policy(call)
    transfer = sending.resend_transfer(
        _archive(call), _actor(call), call.path["transfer_id"], policy, call.state.enqueue_forward
    )
    return transfer_out(call, transfer, policy, detail=True)


def cancel_transfer(call: Call) -> TransferOut:
    body: ReasonIn = call.body
    transfer = sending.cancel_transfer(
        _engine(call), _actor(call), call.path["transfer_id"], body.reason
    )
    return transfer_out(call, transfer, _policy(call), detail=True)


def return_transfer(call: Call) -> TransferOut:
    body: ReturnIn = call.body
    transfer = sending.return_transfer(
        _engine(call), _actor(call), call.path["transfer_id"], body.reason
    )
    return transfer_out(call, transfer, _policy(call), detail=True)


def mark_transfer_delivered(call: Call) -> TransferOut:
    """Deliver as sent: an administrator of the sender records, with a reason, that a failed
    or partial delivery reached the node by other means (`exchange.delivered_by_hand`)."""
    body: MarkDeliveredIn = call.body
    transfer = mark_delivered(_engine(call), _actor(call), call.path["transfer_id"], body.reason)
    return transfer_out(call, transfer, _policy(call), detail=True)


def mark_transfer_done(call: Call) -> TransferOut:
    transfer = sending.mark_done(_engine(call), _actor(call), call.path["transfer_id"])
    return transfer_out(call, transfer, _policy(call), detail=True)


# --- the worklist ------------------------------------------------------------------------------


def get_worklist(call: Call) -> WorklistOut:
    q: WorklistQueryIn = call.query
    policy, actor = _policy(call), _actor(call)
    institution = _institution(call, policy, q.institution)
    # The worklist is the receiving side of its transfers: decided as a transfer party.
    resource = Resource.transfer(institution, institution)
    decision = decide(actor.principal, Action.SEARCH, resource, actor.context, policy)
    if not decision.allowed:
        raise Forbidden(decision.reason)
    scope = {institution} | {
        pk
        for pk, facts in policy.institutions.items()
        if facts.parent_pk == institution and Action.SEARCH in call.principal.actions_in(pk)
    }
    senders: tuple[int, ...] = ()
    if q.sender:
        senders = tuple(pk for pk, f in policy.institutions.items() if f.code == q.sender) or (-1,)
    query = WorklistQuery(
        statuses=tuple(s.strip() for s in q.status.split(",") if s.strip()),
        sender_pks=senders,
        priority=q.priority,
        patient_id=q.patient_id,
        patient_name=q.patient_name,
        accession_number=q.accession,
        modality=q.modality,
        study_date_from=q.study_date_from,
        study_date_to=q.study_date_to,
        arrived_from=q.arrived_from,
        arrived_to=q.arrived_to,
        include_done=q.include_done,
        sort=q.sort,
        descending=q.order == "desc",
        offset=q.offset,
        limit=q.limit,
    )
    total, rows = search_worklist(_engine(call), scope, query)
    items = [_with_retention(call, row, transfer_out(call, row, policy)) for row in rows]
    return WorklistOut(total=total, offset=q.offset, limit=q.limit, items=items)


def _with_retention(call: Call, transfer: Transfer, out: TransferOut) -> TransferOut:
    """The receiver's days left before retention deletes its copy (`exchange.retention_terms`)."""
    defaults: RetentionDefaults = call.state.portal.retention
    engine, now = _engine(call), _actor(call).now
    receiver = transfer.destination_institution_pk
    terms = terms_of(read_policy(engine, receiver), defaults)
    kind = HoldingKind.WORKLIST if transfer.destination_node_pk is None else HoldingKind.NODE
    due = terms.due_at(kind, transfer.sent_at or transfer.created_at)
    uids = [study.study_uid for study in out.studies]
    if uids and frozen_studies(engine, uids, now) == set(uids):  # the owner's hold too
        return out.model_copy(update={"retention_held": True, "retention_due_at": None})
    return out.model_copy(
        update={"retention_days_left": days_left(due, now), "retention_due_at": due}
    )


_T = "transfers"
OPERATIONS = [
    Operation("GET", "/destinations", get_destinations,
              "where an institution may send now: allowed, and left out with the reason", _T,
              response=DestinationsOut, query=DestinationsQuery),
    Operation("POST", "/transfers", create_transfer,
              "a transfer of studies to a worklist or node (a draft unless send is true)", _T,
              TransferIn, TransferOut, 201),
    Operation("GET", "/transfers", list_transfers, "transfers you sent or received, newest first",
              _T, response=list[TransferOut], query=TransferQuery),
    Operation("GET", "/transfers/{transfer_id}", get_transfer,
              "one transfer with its studies, reports and history", _T, response=TransferOut),
    Operation("POST", "/transfers/{transfer_id}/send", send_transfer,
              "send a draft (the destination rules decide now)", _T, ReasonIn, TransferOut),
    Operation("POST", "/transfers/{transfer_id}/cancel", cancel_transfer,
              "withdraw a transfer nobody has downloaded; its grants are revoked", _T, ReasonIn,
              TransferOut),
    Operation("POST", "/transfers/{transfer_id}/resend", resend_transfer,
              "send a failed or partial transfer again", _T, ReasonIn, TransferOut),
    Operation("POST", "/transfers/{transfer_id}/mark-delivered", mark_transfer_delivered,
              "an administrator of the sender records that a failed or partial delivery "
              "arrived by other means (a reason is required)", _T, MarkDeliveredIn, TransferOut),
    Operation("POST", "/transfers/{transfer_id}/return", return_transfer,
              "the receiver sends the transfer back, with a reason", _T, ReturnIn, TransferOut),
    Operation("POST", "/transfers/{transfer_id}/done", mark_transfer_done,
              "the receiver marks the worklist item done", _T, ReasonIn, TransferOut),
    Operation("GET", "/worklist", get_worklist,
              "incoming transfers of an institution (and its security institutions you belong "
              "to): filtered, urgent first, paged", _T, response=WorklistOut,
              query=WorklistQueryIn),
]  # fmt: skip
