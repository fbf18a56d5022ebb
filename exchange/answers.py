"""Answering a request with studies: fetch what is on the asked institution's PACS, then send.

Studies on a node are fetched into Ferry first (`RemotePacs.retrieve_study`: C-MOVE or C-GET,
stored as the node's institution); then all the picks go in one transfer to the requester's
destination through `exchange.sending`. Some failed: partly answered; none could be fetched,
or the destination refuses the transfer: nothing is sent and the request stays in progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from archive.store import Archive
from exchange import sending
from exchange.models import Priority
from exchange.notifications import EventKind
from exchange.parties import Actor, study_facts
from exchange.request_models import ImagingRequest, RequestAnswer, RequestStatus
from exchange.request_parties import audit_request, change_status, require
from exchange.request_search import RemotePacs
from exchange.requests import allowed, close, refuse, require_pending, take_up
from exchange.routing import EnqueueForward
from foundation.errors import Conflict, FerryError, Forbidden, InvalidQuery
from policy.decision import PolicySnapshot
from policy.roles import Action


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
) -> ImagingRequest:
    """Fetches the picks on nodes, sends all picks in one transfer to the requester's
    destination, and closes the request: answered, or partly answered when some failed."""
    engine = archive.engine
    request = require(engine, actor, Action.ANSWER, public_id)
    require_pending(engine, actor, request, "answered")
    if not picks:
        raise InvalidQuery("pick at least one study, or answer that nothing was found")
    request = take_up(engine, actor, public_id)
    ready, failed = _fetch(actor, request, picks, policy, pacs)
    if not ready:
        error = Conflict("none of the picked studies could be fetched: " + "; ".join(failed))
        refuse(engine, actor, request, "answer", error)
    new = sending.NewTransfer(
        sender_pk=request.asked_institution_pk,
        destination_pk=request.requesting_institution_pk,
        node_pk=request.destination_node_pk,
        studies=ready,
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
        _note(engine, actor, request, f"answer not sent: {error}")
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


def _note(engine: Engine, actor: Actor, request: ImagingRequest, reason: str) -> None:
    """A history row without a change of state (an answer that could not be sent)."""
    with Session(engine) as session:
        stored = session.get(ImagingRequest, request.pk)
        assert stored is not None
        status = RequestStatus(stored.status)
        change_status(session, stored, status, actor=actor.label, reason=reason, now=actor.now)
        session.commit()


def _fetch(
    actor: Actor,
    request: ImagingRequest,
    picks: Sequence[Pick],
    policy: PolicySnapshot,
    pacs: RemotePacs | None,
) -> tuple[list[str], list[str]]:
    """(studies now in Ferry, reasons of those that are not)."""
    ready: list[str] = []
    failed: list[str] = []
    for pick in dict.fromkeys(picks):
        if pick.node_pk is None:
            ready.append(pick.study_uid)
            continue
        node = policy.nodes.get(pick.node_pk)
        if node is None or node.institution_pk != request.asked_institution_pk:
            raise InvalidQuery("the node is not one of the asked institution's")
        if pacs is None:
            raise InvalidQuery("this Ferry cannot reach nodes from here")
        try:
            pacs.retrieve_study(
                pick.node_pk, pick.study_uid, requested_by=actor.label,
                institution_pk=request.asked_institution_pk,
            )  # fmt: skip
        except FerryError as error:
            failed.append(f"{pick.study_uid[:64]} from {node.ae_title}: {error}"[:300])
            continue
        ready.append(pick.study_uid)
    return list(dict.fromkeys(ready)), failed
