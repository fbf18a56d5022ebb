"""Requests for imaging and their answers: ask, take up, answer, reject, cancel, expire.

A requester (`request` in the asking institution) asks another institution for a patient's
studies, naming where the answer goes: the asking institution's worklist or one of its nodes.
Those who may `answer` at the asked institution search (`exchange.request_search`), pick
studies and answer: what is on their PACS is fetched into Ferry first, then one transfer to the
requester's destination is made through `exchange.sending` (its decisions, grants and audit).
Or they reject with a reason, or answer that nothing was found (answering with studies is
`exchange.answers`; expiry is `exchange.request_expiry`). States:

    open ─▶ in-progress ─▶ answered | partly-answered | rejected | nothing-found
    open / in-progress ─▶ cancelled (the requester) | expired (FERRY_REQUEST_EXPIRY_DAYS)

Each change is kept with time, actor and reason, audited with the request's opaque id as the
transaction, and the people told are queued in the same transaction (`notify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

from sqlalchemy import Engine
from sqlmodel import Session

from exchange.notifications import Event, EventKind, Subject, notify
from exchange.notifications import Priority as EventPriority
from exchange.parties import Actor
from exchange.request_models import (
    DETAILS_MAX_CHARS,
    PENDING,
    ImagingRequest,
    RequestStatus,
    Urgency,
)
from exchange.request_parties import audit_request, change_status, require
from foundation.errors import Conflict, Forbidden, InvalidQuery
from policy.decision import Decision, PolicySnapshot, Resource, decide
from policy.roles import Action

DEFAULT_EXPIRY_DAYS = 30
MAX_ACCESSIONS = 20


@dataclass(frozen=True)
class NewRequest:
    requesting_pk: int
    asked_pk: int
    node_pk: int | None = None  # None: the asking institution's worklist
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""  # YYYYMMDD
    patient_sex: str = ""
    accession_numbers: Sequence[str] = ()
    study_date_from: str = ""
    study_date_to: str = ""
    modalities: Sequence[str] = ()
    body_part: str = ""
    details: str = ""
    clinical_reason: str = ""
    urgency: Urgency = Urgency.ROUTINE


def refuse(
    engine: Engine, actor: Actor, request: ImagingRequest, action: str, error: Exception
) -> NoReturn:
    """A refusal for the request's state or content: audited, then raised."""
    audit_request(engine, actor, request, action, Decision(False, "request-state", str(error)))
    raise error


def _check_new(new: NewRequest, policy: PolicySnapshot) -> None:
    if new.asked_pk not in policy.institutions:
        raise InvalidQuery("unknown institution asked")
    if new.asked_pk == new.requesting_pk:
        raise InvalidQuery("a request goes to another institution")
    if new.node_pk is not None:
        node = policy.nodes.get(new.node_pk)
        if node is None or node.institution_pk != new.requesting_pk:
            raise InvalidQuery("the destination node is not one of the asking institution's")
    if not new.patient_id.strip() and not (new.patient_name.strip() and new.patient_birth_date):
        raise InvalidQuery("name the patient: a Patient ID, or a name with a birth date")
    if len(new.details) > DETAILS_MAX_CHARS:
        raise InvalidQuery(f"the details may have at most {DETAILS_MAX_CHARS} characters")
    if len(new.accession_numbers) > MAX_ACCESSIONS:
        raise InvalidQuery(f"a request names at most {MAX_ACCESSIONS} accession numbers")


def create_request(
    engine: Engine,
    actor: Actor,
    new: NewRequest,
    policy: PolicySnapshot,
    expiry_days: int = DEFAULT_EXPIRY_DAYS,
) -> ImagingRequest:
    """An open request; the asked institution is told in the same transaction."""
    resource = Resource.institution(new.requesting_pk)
    decision = decide(actor.principal, Action.REQUEST, resource, actor.context, policy)
    if not decision.allowed:
        raise Forbidden(decision.reason)
    _check_new(new, policy)
    request = ImagingRequest(
        requesting_institution_pk=new.requesting_pk,
        asked_institution_pk=new.asked_pk,
        destination_node_pk=new.node_pk,
        urgency=Urgency(new.urgency).value,
        patient_id=new.patient_id.strip(),
        issuer_of_patient_id=new.issuer_of_patient_id.strip(),
        patient_name=new.patient_name.strip(),
        patient_birth_date=new.patient_birth_date,
        patient_sex=new.patient_sex.strip().upper(),
        accession_numbers="\\".join(a.strip() for a in new.accession_numbers if a.strip()),
        study_date_from=new.study_date_from,
        study_date_to=new.study_date_to,
        modalities="\\".join(m.strip().upper() for m in new.modalities if m.strip()),
        body_part=new.body_part.strip().upper(),
        details=new.details,
        clinical_reason=new.clinical_reason,
        created_by=actor.label[:256],
        created_by_user_pk=actor.user_pk,
        created_at=actor.now,
        expires_at=actor.now + timedelta(days=expiry_days),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(request)
        session.flush()
        change_status(session, request, RequestStatus.OPEN, actor=actor.label,
                      reason="created", now=actor.now)  # fmt: skip
        _tell(session, request, EventKind.REQUEST_RECEIVED, actor)
        session.commit()
    audit_request(engine, actor, request, "request", decision, step="created")
    return request


def _tell(session: Session, request: ImagingRequest, kind: EventKind, actor: Actor | None) -> None:
    asking, asked = request.requesting_institution_pk, request.asked_institution_pk
    institution, counterpart = (asked, asking) if kind is EventKind.REQUEST_RECEIVED else (
        asking, asked
    )  # fmt: skip
    event = Event(
        kind,
        institution,
        Subject("request", request.pk or 0),
        EventPriority(request.urgency),
        actor_user_pk=actor.user_pk if actor else None,
        person_user_pk=request.created_by_user_pk,
        counterpart_pk=counterpart,
    )
    notify(session.connection(), event, now=actor.now if actor else request.created_at)


def require_pending(engine: Engine, actor: Actor, request: ImagingRequest, step: str) -> None:
    """A closed request takes no more steps: 409, audited."""
    if RequestStatus(request.status) not in PENDING:
        error = Conflict(f"the request is {request.status}: it can no longer be {step}")
        action = "request" if step == "cancelled" else "answer"
        refuse(engine, actor, request, action, error)


def take_up(engine: Engine, actor: Actor, public_id: str) -> ImagingRequest:
    """The asked institution starts on it: open -> in progress (no change otherwise)."""
    request = require(engine, actor, Action.ANSWER, public_id)
    if request.status != RequestStatus.OPEN:
        return request
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(ImagingRequest, request.pk)
        assert stored is not None
        change_status(session, stored, RequestStatus.IN_PROGRESS, actor=actor.label,
                      reason="searching", now=actor.now)  # fmt: skip
        session.commit()
    return stored


def close(
    engine: Engine,
    actor: Actor,
    request: ImagingRequest,
    status: RequestStatus,
    reason: str,
    tell: EventKind | None,
) -> ImagingRequest:
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(ImagingRequest, request.pk)
        assert stored is not None
        stored.closed_at = actor.now
        change_status(session, stored, status, actor=actor.label, reason=reason, now=actor.now)
        if tell is not None:
            _tell(session, stored, tell, actor)
        session.commit()
    return stored


def cancel_request(
    engine: Engine, actor: Actor, public_id: str, reason: str = ""
) -> ImagingRequest:
    """The requester withdraws a request nobody has answered yet."""
    request = require(engine, actor, Action.REQUEST, public_id)
    require_pending(engine, actor, request, "cancelled")
    closed = close(engine, actor, request, RequestStatus.CANCELLED, reason or "cancelled", None)
    audit_request(
        engine, actor, closed, "request", allowed(reason or "cancelled"), step="cancelled"
    )
    return closed


def reject_request(engine: Engine, actor: Actor, public_id: str, reason: str) -> ImagingRequest:
    """The asked institution says no; the reason goes to the requester."""
    request = require(engine, actor, Action.ANSWER, public_id)
    if not reason.strip():
        raise InvalidQuery("say why the request is rejected")
    require_pending(engine, actor, request, "rejected")
    closed = close(
        engine, actor, request, RequestStatus.REJECTED, reason, EventKind.REQUEST_REJECTED
    )
    audit_request(engine, actor, closed, "answer", allowed(reason), step="rejected")
    return closed


def answer_nothing_found(
    engine: Engine, actor: Actor, public_id: str, reason: str = ""
) -> ImagingRequest:
    request = require(engine, actor, Action.ANSWER, public_id)
    require_pending(engine, actor, request, "answered")
    why = reason or "nothing found"
    closed = close(
        engine, actor, request, RequestStatus.NOTHING_FOUND, why, EventKind.REQUEST_ANSWERED
    )
    audit_request(engine, actor, closed, "answer", allowed(why), step="nothing-found")
    return closed


def allowed(reason: str) -> Decision:
    return Decision(True, "request-party", reason[:1024])
