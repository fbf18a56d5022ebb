"""The requests JSON API under `/api`: ask another institution for imaging, and answer.

Handlers build an `exchange.parties.Actor` and call `exchange.requests`, which decides, audits
and raises domain errors (the status table turns them into 400, 403, 404 and 409). A request
is named by its opaque id only; to anyone who is no party to it, it does not exist (404).
"""

from __future__ import annotations

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from exchange import answers, requests
from exchange.destinations import node_of
from exchange.models import Transfer
from exchange.request_models import ImagingRequest, RequestAnswer, Urgency
from exchange.request_parties import decide_on, read_history, require, side_of, visible_to
from exchange.request_search import query_keys, search_archive, search_node
from foundation.errors import InvalidQuery
from policy.decision import PolicySnapshot
from policy.roles import Action
from portal.openapi import Call, Operation, PathParameter
from portal.request_schemas import (
    AnswerIn,
    CandidateOut,
    PatientOut,
    ReasonIn,
    RejectIn,
    RequestIn,
    RequestListOut,
    RequestOut,
    RequestQuery,
    SearchIn,
    SearchOut,
)
from portal.transfer_schemas import ChangeOut
from portal.transfers_api import (
    _ID_PATTERN,
    _actor,
    _archive,
    _code,
    _engine,
    _institution,
    _parse_id,
    _policy,
)

PARAMETERS = {
    "request_id": PathParameter(
        {"type": "string", "pattern": _ID_PATTERN}, _parse_id, "a request's opaque id"
    )
}


def _split(text: str) -> list[str]:
    return [item for item in text.split("\\") if item]


def request_out(
    call: Call, request: ImagingRequest, policy: PolicySnapshot, *, detail: bool = False
) -> RequestOut:
    engine = _engine(call)
    node = policy.nodes.get(request.destination_node_pk or -1)
    answers: list[str] = []
    if detail:
        with Session(engine) as session:
            answers = list(
                session.exec(
                    select(Transfer.public_id)
                    .join(RequestAnswer, col(RequestAnswer.transfer_pk) == col(Transfer.pk))
                    .where(RequestAnswer.request_pk == request.pk)
                )
            )
    history = read_history(engine, request.pk or 0) if detail else []
    return RequestOut(
        id=request.public_id,
        status=request.status,
        status_reason=request.status_reason,
        urgency=request.urgency,
        institution=_code(policy, request.requesting_institution_pk),
        asked=_code(policy, request.asked_institution_pk),
        node=node.ae_title if node else None,
        patient=PatientOut(
            id=request.patient_id,
            issuer=request.issuer_of_patient_id,
            name=request.patient_name,
            birth_date=request.patient_birth_date,
            sex=request.patient_sex,
        ),
        accession_numbers=_split(request.accession_numbers),
        study_date_from=request.study_date_from,
        study_date_to=request.study_date_to,
        modalities=_split(request.modalities),
        body_part=request.body_part,
        details=request.details,
        reason=request.clinical_reason,
        created_by=request.created_by,
        created_at=request.created_at,
        expires_at=request.expires_at,
        closed_at=request.closed_at,
        side=side_of(decide_on(_actor(call), Action.SEARCH, request)),
        answers=answers,
        history=[
            ChangeOut(at=e.at, actor=e.actor, status=e.status, reason=e.reason) for e in history
        ],
    )


def create_request(call: Call) -> RequestOut:
    body: RequestIn = call.body
    policy, actor = _policy(call), _actor(call)
    requesting = _institution(call, policy, body.institution)
    asked = next((pk for pk, f in policy.institutions.items() if f.code == body.asked), None)
    if asked is None:
        raise InvalidQuery(f"unknown institution {body.asked!r}")
    new = requests.NewRequest(
        requesting_pk=requesting,
        asked_pk=asked,
        node_pk=node_of(policy, requesting, body.node) if body.node else None,
        patient_id=body.patient.id,
        issuer_of_patient_id=body.patient.issuer,
        patient_name=body.patient.name,
        patient_birth_date=body.patient.birth_date,
        patient_sex=body.patient.sex,
        accession_numbers=body.accession_numbers,
        study_date_from=body.study_date_from,
        study_date_to=body.study_date_to,
        modalities=body.modalities,
        body_part=body.body_part,
        details=body.details,
        clinical_reason=body.reason,
        urgency=Urgency(body.urgency),
    )
    days = call.state.portal.request_expiry_days
    created = requests.create_request(_engine(call), actor, new, policy, days)
    return request_out(call, created, policy, detail=True)


def list_requests(call: Call) -> RequestListOut:
    q: RequestQuery = call.query
    policy, principal = _policy(call), call.principal
    statement = select(ImagingRequest).where(visible_to(principal))
    asking = col(ImagingRequest.requesting_institution_pk)
    asked = col(ImagingRequest.asked_institution_pk)
    if q.direction == "incoming":
        statement = statement.where(asked.in_(list(principal.institutions_for(Action.ANSWER))))
    elif q.direction == "outgoing":
        statement = statement.where(asking.in_(list(principal.institutions_for(Action.REQUEST))))
    if q.institution is not None:
        pk = _institution(call, policy, q.institution)
        statement = statement.where((asking == pk) | (asked == pk))
    statuses = [s.strip() for s in q.status.split(",") if s.strip()]
    if statuses:
        statement = statement.where(col(ImagingRequest.status).in_(statuses))
    if q.urgency is not None:
        statement = statement.where(ImagingRequest.urgency == q.urgency)
    if q.patient_id is not None:
        statement = statement.where(ImagingRequest.patient_id == q.patient_id)
    urgent_first = case((col(ImagingRequest.urgency) == Urgency.URGENT.value, 0), else_=1)
    with Session(_engine(call), expire_on_commit=False) as session:
        total = session.exec(select(func.count()).select_from(statement.subquery())).one()
        rows = session.exec(
            statement.order_by(urgent_first, col(ImagingRequest.created_at).desc(),
                               col(ImagingRequest.pk).desc())
            .offset(q.offset).limit(q.limit)
        ).all()  # fmt: skip
    items = [request_out(call, row, policy) for row in rows]
    return RequestListOut(total=total, offset=q.offset, limit=q.limit, items=items)


def get_request(call: Call) -> RequestOut:
    request = require(_engine(call), _actor(call), Action.SEARCH, call.path["request_id"])
    return request_out(call, request, _policy(call), detail=True)


def search_for_request(call: Call) -> SearchOut:
    body: SearchIn = call.body
    policy, actor, engine = _policy(call), _actor(call), _engine(call)
    request = requests.take_up(engine, actor, call.path["request_id"])
    if body.node is None:
        found = search_archive(engine, actor, request)
    else:
        found = search_node(call.state.remote_pacs, actor, request, body.node, policy)
    matches = [CandidateOut.of(candidate) for candidate in found]
    return SearchOut(source=body.node or "archive", query=query_keys(request), matches=matches)


def answer_request(call: Call) -> RequestOut:
    body: AnswerIn = call.body
    policy, actor = _policy(call), _actor(call)
    request = require(_engine(call), actor, Action.ANSWER, call.path["request_id"])
    picks = [
        answers.Pick(p.study_uid, node_of(policy, request.asked_institution_pk, p.node)
                      if p.node else None)
        for p in body.studies
    ]  # fmt: skip
    answered = answers.answer_request(
        _archive(call), actor, request.public_id, picks, policy, call.state.enqueue_forward,
        call.state.remote_pacs, call.state.fetch_max_attempts,
    )  # fmt: skip
    return request_out(call, answered, policy, detail=True)


def answer_nothing_found(call: Call) -> RequestOut:
    body: ReasonIn = call.body
    request = requests.answer_nothing_found(
        _engine(call), _actor(call), call.path["request_id"], body.reason
    )
    return request_out(call, request, _policy(call), detail=True)


def reject_request(call: Call) -> RequestOut:
    body: RejectIn = call.body
    request = requests.reject_request(
        _engine(call), _actor(call), call.path["request_id"], body.reason
    )
    return request_out(call, request, _policy(call), detail=True)


def cancel_request(call: Call) -> RequestOut:
    body: ReasonIn = call.body
    request = requests.cancel_request(
        _engine(call), _actor(call), call.path["request_id"], body.reason
    )
    return request_out(call, request, _policy(call), detail=True)


_R = "requests"
OPERATIONS = [
    Operation("POST", "/requests", create_request,
              "ask another institution for a patient's imaging", _R, RequestIn, RequestOut, 201),
    Operation("GET", "/requests", list_requests,
              "requests you made or may answer: filtered, urgent first, newest first, paged",
              _R, response=RequestListOut, query=RequestQuery),
    Operation("GET", "/requests/{request_id}", get_request,
              "one request with its answers and history", _R, response=RequestOut),
    Operation("POST", "/requests/{request_id}/search", search_for_request,
              "search Ferry or one of your nodes with the request's identifiers (takes it up)",
              _R, SearchIn, SearchOut, asks_a_node=True),
    Operation("POST", "/requests/{request_id}/answer", answer_request,
              "answer with studies: those on a node are fetched, then all are sent to the "
              "requester's destination", _R, AnswerIn, RequestOut),
    Operation("POST", "/requests/{request_id}/nothing-found", answer_nothing_found,
              "answer that nothing was found", _R, ReasonIn, RequestOut),
    Operation("POST", "/requests/{request_id}/reject", reject_request,
              "reject the request, with a reason", _R, RejectIn, RequestOut),
    Operation("POST", "/requests/{request_id}/cancel", cancel_request,
              "the requester withdraws a request nobody has answered", _R, ReasonIn, RequestOut),
]  # fmt: skip
