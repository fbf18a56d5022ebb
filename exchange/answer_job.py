"""The answer's fetch from the asked institution's nodes, as an outbox job (`exchange.answer`).

`answers.queue_answer` writes the job in the same transaction as the request's history row that
announces it. The worker then fetches each picked study (C-MOVE or C-GET through `RemotePacs`),
noting every study fetched or not in the request's history (its progress, visible to both
institutions), and sends what came in (`answers.send_answer`): answered, or partly answered.
The person who answered is the actor throughout: a user's rights are read again when the job
runs, so a membership removed meanwhile stops the answer. Nothing fetched, or a destination
that refuses: the request stays in progress with the reason in its history, and the job is
parked where administrators see failed jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from archive.store import Archive
from exchange.answers import ANSWER_REQUEST, Pick, note, send_answer
from exchange.fetching import FetchServices, trying_again
from exchange.notifications import Event, EventKind, Subject, notify
from exchange.notifications import Priority as EventPriority
from exchange.parties import Actor, actor_from_payload
from exchange.request_models import PENDING, ImagingRequest, RequestStatus
from exchange.request_parties import audit_request, load_request
from exchange.request_search import RemotePacs
from foundation.errors import FerryError, NodeUnavailable
from foundation.jobs import ClaimedJob, JobFailed
from policy.decision import Decision, PolicySnapshot

__all__ = ["ANSWER_REQUEST", "answer_handler"]


def answer_handler(services: FetchServices) -> Callable[[ClaimedJob], str]:
    archive, pacs, enqueue_forward = services.archive, services.pacs, services.enqueue_forward
    policy, clock = services.policy, services.clock

    def answer(job: ClaimedJob) -> str:
        payload = job.payload
        actor = actor_from_payload(archive.engine, payload, clock())
        request = load_request(archive.engine, str(payload["request"]))
        picks = [Pick(str(uid), node) for uid, node in payload["picks"]]
        if RequestStatus(request.status) not in PENDING:
            return f"the request is {request.status}: nothing fetched"
        run = _fetch(archive, actor, request, picks, policy(), pacs)
        all_down = run.unavailable and not run.fetched and not run.failed
        if all_down and job.attempts < job.max_attempts:  # every node is down: all again later
            titles, errors = ", ".join(run.unavailable), "; ".join(run.unavailable.values())
            note(archive.engine, actor, request, trying_again(titles, errors, job))
            raise JobFailed(errors[:1000])
        untried = run.not_tried()
        ready, failed = run.ready, run.failed + untried
        for reason in untried:
            note(archive.engine, actor, request, f"could not fetch {reason}")
        request = load_request(archive.engine, request.public_id)
        if RequestStatus(request.status) not in PENDING:  # cancelled while fetching
            note(archive.engine, actor, request, "fetched, not sent: the request was closed")
            return f"the request is {request.status}: nothing sent"
        if not ready:
            reason = "none of the picked studies could be fetched: " + "; ".join(failed)
            note(archive.engine, actor, request, reason)
            refused = Decision(False, "answer-fetch", reason[:1024])
            audit_request(archive.engine, actor, request, "answer", refused, outcome="failed")
            _tell_not_sent(archive.engine, actor, request)
            raise JobFailed(reason[:1000], permanent=True)
        try:
            closed = send_answer(archive, actor, request, ready, failed, policy(),
                                 enqueue_forward)  # fmt: skip
        except FerryError as error:  # noted in the history and audited by send_answer
            _tell_not_sent(archive.engine, actor, request)
            raise JobFailed(f"the answer was not sent: {error}", permanent=True) from error
        return f"{closed.status}: {closed.status_reason}"[:500]

    return answer


def _tell_not_sent(engine: Engine, actor: Actor, request: ImagingRequest) -> None:
    """The institution asked hears that its answer went nowhere (`answer-not-sent`)."""
    event = Event(
        EventKind.ANSWER_NOT_SENT, request.asked_institution_pk,
        Subject("request", request.pk or 0), EventPriority(request.urgency),
        actor_user_pk=actor.user_pk, counterpart_pk=request.requesting_institution_pk,
    )  # fmt: skip
    with engine.begin() as connection:
        notify(connection, event, now=actor.now)


@dataclass
class _Run:
    """One run of the fetch: studies now in Ferry, reasons of those that failed, and the nodes
    that could not be reached (why, by AE title) with the picks left untried on them."""

    ready: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    fetched: int = 0
    unavailable: dict[str, str] = field(default_factory=dict)
    untried: list[tuple[str, str]] = field(default_factory=list)  # (study UID, AE title)

    def not_tried(self) -> list[str]:
        return [f"{uid[:64]} from {title}: {self.unavailable[title]}"[:300]
                for uid, title in self.untried]  # fmt: skip


def _fetch(
    archive: Archive,
    actor: Actor,
    request: ImagingRequest,
    picks: list[Pick],
    policy: PolicySnapshot,
    pacs: RemotePacs,
) -> _Run:
    """Fetches each pick on a node, each noted in the history; a node that cannot be reached
    is not asked again in this run (its other picks would fail the same way)."""
    run = _Run()
    on_nodes = sum(1 for pick in picks if pick.node_pk is not None)
    for pick in picks:
        if pick.node_pk is None:
            run.ready.append(pick.study_uid)
            continue
        node = policy.nodes.get(pick.node_pk)
        title = node.ae_title if node is not None else "a node no longer there"
        if title in run.unavailable:
            run.untried.append((pick.study_uid, title))
            continue
        try:
            if node is None or node.institution_pk != request.asked_institution_pk:
                raise FerryError("the node is no longer the asked institution's")
            pacs.retrieve_study(
                pick.node_pk, pick.study_uid, requested_by=actor.label,
                institution_pk=request.asked_institution_pk,
            )  # fmt: skip
        except NodeUnavailable as error:
            run.unavailable[title] = str(error)[:300]
            run.untried.append((pick.study_uid, title))
            continue
        except FerryError as error:
            reason = f"{pick.study_uid[:64]} from {title}: {error}"[:300]
            run.failed.append(reason)
            note(archive.engine, actor, request, f"could not fetch {reason}")
            continue
        run.fetched += 1
        run.ready.append(pick.study_uid)
        fetched = f"fetched {pick.study_uid[:64]} from {title} ({run.fetched} of {on_nodes})"
        note(archive.engine, actor, request, fetched)
    run.ready = list(dict.fromkeys(run.ready))
    return run
