"""Answering a request with studies: fetch what is on the asked institution's PACS, then send.

Picks that are all in Ferry are sent at once. Studies on a node are fetched into Ferry first,
by a job (`exchange.answer_job`: C-MOVE or C-GET through `RemotePacs`, stored as the node's
institution) that notes its progress in the request's history; then all the picks go in one
transfer to the requester's destination through `exchange.sending`. Some failed: partly
answered; none could be fetched, or the destination refuses the transfer: nothing is sent and
the request stays in progress, the reason in its history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from archive.store import Archive
from exchange import sending
from exchange.fetching import FETCH_ATTEMPTS
from exchange.models import Priority
from exchange.notifications import EventKind
from exchange.parties import Actor, actor_payload, study_facts
from exchange.request_models import ImagingRequest, RequestAnswer, RequestStatus
from exchange.request_parties import audit_request, change_status, require
from exchange.request_search import RemotePacs
from exchange.requests import allowed, close, refuse, require_pending, take_up
from exchange.routing import EnqueueForward
from foundation.errors import Conflict, Forbidden, InvalidQuery
from foundation.jobs import JobQueue, enqueue
from policy.decision import PolicySnapshot
from policy.roles import Action

ANSWER_REQUEST = "exchange.answer"


@dataclass(frozen=True)
class Pick:
    """A study chosen to answer with: in Ferry already (node None), or on one of the asked
    institution's nodes (fetched first)."""

    study_uid: str
    node_pk: int | None = None


def answer_request(
    archive: Archive,
    actor: Actor,
    public_id: str,
    picks: Sequence[Pick],
    policy: PolicySnapshot,
    enqueue_forward: EnqueueForward,
    pacs: RemotePacs | None,
    max_attempts: int = FETCH_ATTEMPTS,
) -> ImagingRequest:
    """Answers at once when every pick is in Ferry; else queues the fetch from the nodes (an
    `exchange.answer` job of `max_attempts` runs while a node cannot be reached, which sends
    when it is done) and returns the request in progress."""
    engine = archive.engine
    request = require(engine, actor, Action.ANSWER, public_id)
    require_pending(engine, actor, request, "answered")
    if not picks:
        raise InvalidQuery("pick at least one study, or answer that nothing was found")
    picks = list(dict.fromkeys(picks))
    nodes = _nodes_of(request, picks, policy, pacs)
    if answer_underway(engine, request.public_id):
        refuse(engine, actor, request, "answer", Conflict("an answer is already being fetched"))
    request = take_up(engine, actor, public_id)
    if not nodes:
        return send_answer(archive, actor, request, [p.study_uid for p in picks], [], policy,
                           enqueue_forward)  # fmt: skip
    return queue_answer(engine, actor, request, picks, nodes, max_attempts)


def queue_answer(
    engine: Engine,
    actor: Actor,
    request: ImagingRequest,
    picks: Sequence[Pick],
    nodes: Sequence[str],
    max_attempts: int = FETCH_ATTEMPTS,
) -> ImagingRequest:
    """The fetch as a job, written with the history row that announces it (outbox)."""
    on_nodes = sum(1 for pick in picks if pick.node_pk is not None)
    payload = {
        "request": request.public_id,
        "picks": [[pick.study_uid, pick.node_pk] for pick in picks],
        **actor_payload(actor),
    }
    reason = (f"fetching {on_nodes} studies from {', '.join(nodes)}; "
              "the answer is sent when they are in")  # fmt: skip
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(ImagingRequest, request.pk)
        assert stored is not None
        status = RequestStatus(stored.status)
        change_status(session, stored, status, actor=actor.label, reason=reason, now=actor.now)
        enqueue(session.connection(), ANSWER_REQUEST, payload, now=actor.now,
                max_attempts=max_attempts)  # fmt: skip
        session.commit()
    audit_request(engine, actor, stored, "answer", allowed(reason), step="fetching")
    return stored


def answer_underway(engine: Engine, public_id: str) -> bool:
    """Whether a fetch for this request is queued or running."""
    return JobQueue(engine).underway(ANSWER_REQUEST, "request", public_id)


def _nodes_of(
    request: ImagingRequest, picks: Sequence[Pick], policy: PolicySnapshot, pacs: object
) -> list[str]:
    """The AE titles the picks are fetched from; every node must be the asked institution's."""
    titles: list[str] = []
    for pick in picks:
        if pick.node_pk is None:
            continue
        node = policy.nodes.get(pick.node_pk)
        if node is None or node.institution_pk != request.asked_institution_pk:
            raise InvalidQuery("the node is not one of the asked institution's")
        if pacs is None:
            raise InvalidQuery("this Ferry cannot reach nodes from here")
        titles.append(node.ae_title)
    return list(dict.fromkeys(titles))


def send_answer(
    archive: Archive,
    actor: Actor,
    request: ImagingRequest,
    ready: Sequence[str],
    failed: Sequence[str],
    policy: PolicySnapshot,
    enqueue_forward: EnqueueForward,
) -> ImagingRequest:
    """All the ready studies in one transfer to the requester's destination; the request is
    then answered, or partly answered when some could not be fetched."""
    engine = archive.engine
    new = sending.NewTransfer(
        sender_pk=request.asked_institution_pk,
        destination_pk=request.requesting_institution_pk,
        node_pk=request.destination_node_pk,
        studies=list(ready),
        priority=Priority(request.urgency),
        note=f"Answer to request {request.public_id}",
    )
    transfer = sending.create_transfer(archive, actor, new, policy)
    try:
        transfer = sending.send_transfer(
            archive, actor, transfer.public_id, policy, enqueue_forward
        )
    except Forbidden as error:  # the requester's destination does not take it now
        sending.cancel_transfer(engine, actor, transfer.public_id, "the answer was not sent")
        note(engine, actor, request, f"answer not sent: {error}")
        refuse(engine, actor, request, "answer", error)
    status = RequestStatus.PARTLY_ANSWERED if failed else RequestStatus.ANSWERED
    reason = f"sent {len(ready)} studies in transfer {transfer.public_id}"
    reason += f"; not sent: {'; '.join(failed)}" if failed else ""
    with Session(engine) as session:
        session.add(RequestAnswer(request_pk=request.pk or 0, transfer_pk=transfer.pk or 0))
        session.commit()
    closed = close(engine, actor, request, status, reason, EventKind.REQUEST_ANSWERED)
    with Session(engine) as session:
        facts = study_facts(session, ready)
    audit_request(engine, actor, closed, "answer", allowed(reason), studies=facts,
                  step=status.value, transfer=transfer.public_id)  # fmt: skip
    return closed


def note(engine: Engine, actor: Actor, request: ImagingRequest, reason: str) -> None:
    """A history row without a change of state (an answer that could not be sent)."""
    with Session(engine) as session:
        stored = session.get(ImagingRequest, request.pk)
        assert stored is not None
        status = RequestStatus(stored.status)
        change_status(session, stored, status, actor=actor.label, reason=reason, now=actor.now)
        session.commit()
