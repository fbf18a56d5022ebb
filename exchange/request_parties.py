"""Who may see and act on a request: the institution asking and the one asked; and its audit.

A request is found by its opaque id. To anyone who is no party to it (no membership with
`request` in the asking institution, nor `answer` in the asked one) it answers exactly like a
request that does not exist. Every step is audited with the request's opaque id as the
transaction and the patient's ID and accession number, so the audit search tells the story.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from audit.trail import AuditRecord, record
from exchange.parties import Actor, StudyFacts
from exchange.request_models import ImagingRequest, RequestEvent, RequestStatus
from foundation.errors import Forbidden, NotFound
from policy.decision import ANSWERER_SIDE, REQUESTER_SIDE, Decision, Resource, decide
from policy.principal import Principal
from policy.roles import Action

SIDES = {REQUESTER_SIDE: "requester", ANSWERER_SIDE: "answerer"}


class RequestNotFound(NotFound):
    pass


def load_request(engine: Engine, public_id: str) -> ImagingRequest:
    with Session(engine, expire_on_commit=False) as session:
        query = select(ImagingRequest).where(ImagingRequest.public_id == public_id)
        found = session.exec(query).first()
    if found is None:
        raise RequestNotFound(f"no request {public_id[:40]!r}")
    return found


def decide_on(actor: Actor, action: Action, request: ImagingRequest) -> Decision:
    resource = Resource.request(request.requesting_institution_pk, request.asked_institution_pk)
    return decide(actor.principal, action, resource, actor.context)


def side_of(decision: Decision) -> str:
    return next((SIDES[o] for o in decision.obligations if o in SIDES), "")


def is_party(actor: Actor, request: ImagingRequest) -> bool:
    """Any tie at all (then refusals say why); anyone else is told it does not exist."""
    principal = actor.principal
    asking = Action.REQUEST in principal.actions_in(request.requesting_institution_pk)
    asked = Action.ANSWER in principal.actions_in(request.asked_institution_pk)
    return principal.studies is None and (asking or asked)


def require(engine: Engine, actor: Actor, action: Action, public_id: str) -> ImagingRequest:
    """The request if the actor may do `action` on it; else audited, then 404 or 403."""
    request = load_request(engine, public_id)
    decision = decide_on(actor, action, request)
    if decision.allowed:
        return request
    audit_request(engine, actor, request, action.value, decision)
    if not is_party(actor, request):
        raise RequestNotFound(f"no request {public_id[:40]!r}")
    raise Forbidden(decision.reason)


def visible_to(principal: Principal) -> Any:
    """SQL condition: requests the principal asked (as requester) or may answer."""
    if principal.studies is not None:
        return col(ImagingRequest.pk).in_([])
    asking = list(principal.institutions_for(Action.REQUEST))
    asked = list(principal.institutions_for(Action.ANSWER))
    return or_(
        col(ImagingRequest.requesting_institution_pk).in_(asking),
        col(ImagingRequest.asked_institution_pk).in_(asked),
    )


def change_status(
    session: Session,
    request: ImagingRequest,
    status: RequestStatus,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """Moves the request on and writes the history row, in the session's transaction."""
    request.status, request.status_reason = status.value, reason[:1024]
    session.add(request)
    session.flush()
    session.add(
        RequestEvent(
            request_pk=request.pk or 0, at=now, actor=actor[:256], status=status.value,
            reason=reason[:1024],
        )
    )  # fmt: skip


def read_history(engine: Engine, request_pk: int) -> list[RequestEvent]:
    """Oldest first."""
    query = (
        select(RequestEvent)
        .where(RequestEvent.request_pk == request_pk)
        .order_by(col(RequestEvent.at), col(RequestEvent.pk))
    )
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query))


def first_accession(request: ImagingRequest) -> str:
    return request.accession_numbers.split("\\")[0] if request.accession_numbers else ""


def audit_request(
    engine: Engine,
    actor: Actor | None,
    request: ImagingRequest,
    action: str,
    decision: Decision,
    *,
    outcome: str | None = None,
    studies: Sequence[StudyFacts] = (),
    **detail: Any,
) -> None:
    """One event for the request, or one per study it sent; actor None is Ferry itself."""
    facts = list(studies) or [StudyFacts("", request.patient_id, first_accession(request))]
    for study in facts:
        record(
            engine,
            AuditRecord(
                action=action,
                outcome=outcome or ("allowed" if decision.allowed else "denied"),
                actor=actor.label if actor else "ferry",
                actor_kind=actor.principal.kind.value if actor else "system",
                institution_pk=request.requesting_institution_pk,
                rule=decision.rule,
                reason=decision.reason,
                study_uid=study.study_uid,
                patient_id=study.patient_id or request.patient_id,
                accession_number=study.accession_number,
                transaction=request.public_id,
                client_address=actor.client_address if actor else "",
                detail={
                    "protocol": actor.protocol if actor else "job",
                    "status": request.status,
                    "asked_institution": request.asked_institution_pk,
                    **detail,
                },
            ),
        )
