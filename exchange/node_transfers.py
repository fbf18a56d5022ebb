"""A transfer of studies picked straight from one of the sender's own PACS nodes.

The sender searches one of its institution's nodes (study-level C-FIND through `RemotePacs`),
picks studies, and adds them to a draft transfer: an outbox job (`exchange.transfer-fetch`)
fetches each into Ferry (C-MOVE or C-GET, stored as the sender's), adds it to the draft as it
comes in, noting each in the transfer's history, and sends the transfer when every study is in
(if asked to). A node that cannot be reached (no association, silence, out of resources) is
tried again with the queue's backoff (`FERRY_FETCH_MAX_ATTEMPTS` runs), each noted in the history; a
study the node refuses or does not have leaves the draft unsent with the reason. Both steps
need `transfer` in the sending institution (`decide`, as for any transfer); a node of another
institution answers like one that does not exist, and the node must allow Ferry to query and
retrieve (the bridge checks and audits every C-FIND and fetch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from archive.store import Archive
from audit.trail import AuditRecord, record
from exchange import sending
from exchange.destinations import find_node
from exchange.draft_filling import finish, note_on_draft
from exchange.fetching import FETCH_ATTEMPTS, FetchServices, trying_again
from exchange.history import note_change
from exchange.models import FETCH_FOR_TRANSFER, Transfer, TransferStatus
from exchange.parties import (
    Actor,
    actor_from_payload,
    actor_payload,
    audit_step,
    load_transfer,
    study_uids,
)
from exchange.request_search import MAX_MATCHES, Candidate, RemotePacs, from_keywords
from foundation.errors import (
    Conflict,
    FerryError,
    Forbidden,
    InvalidQuery,
    NodeUnavailable,
    NotFound,
)
from foundation.jobs import ClaimedJob, JobFailed, JobQueue, enqueue
from policy.decision import PolicySnapshot

# Study-level matching keys a sender may search a node with (PS3.4 C.6.2.1.2).
QUERY_KEYS = frozenset(
    {"PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "StudyDate",
     "ModalitiesInStudy", "StudyInstanceUID", "StudyDescription"}
)  # fmt: skip
MAX_VALUE_CHARS = 64


class NodeNotFound(NotFound):
    pass


def sender_node(
    engine: Engine, actor: Actor, institution_pk: int, ae_title: str, policy: PolicySnapshot
) -> int:
    """The node of the sending institution, if the actor may send for it; refusals say why
    and are audited."""
    decision = sending.may_send_for(actor, institution_pk, policy)
    found = find_node(policy, institution_pk, ae_title)
    if decision.allowed and found is not None:
        return found
    reason = decision.reason if not decision.allowed else f"no node {ae_title[:16]!r}"
    record(engine, AuditRecord(
        action="transfer", outcome="denied", actor=actor.label,
        actor_kind=actor.principal.kind.value, institution_pk=institution_pk,
        rule=decision.rule if not decision.allowed else "node-unknown", reason=reason,
        client_address=actor.client_address, detail={"step": "node", "node": ae_title[:16]},
    ))  # fmt: skip
    if not decision.allowed:
        raise Forbidden(decision.reason)
    raise NodeNotFound(reason)


def check_keys(keys: Mapping[str, str]) -> dict[str, str]:
    """The matching keys, or 400: unknown keys, overlong values, or no key at all."""
    unknown = sorted(set(keys) - QUERY_KEYS)
    if unknown:
        raise InvalidQuery(f"cannot search a node by {', '.join(unknown)[:200]}")
    wanted = {k: v.strip() for k, v in keys.items() if v.strip()}
    if not wanted:
        raise InvalidQuery("name at least one matching key (a Patient ID, a name, a date, ...)")
    if any(len(v) > MAX_VALUE_CHARS for v in wanted.values()):
        raise InvalidQuery(f"a matching value has at most {MAX_VALUE_CHARS} characters")
    return wanted


def search_node_studies(
    engine: Engine,
    pacs: RemotePacs | None,
    actor: Actor,
    institution_pk: int,
    ae_title: str,
    keys: Mapping[str, str],
    policy: PolicySnapshot,
) -> list[Candidate]:
    """Studies on the node matching the keys (C-FIND, Study Root), at most MAX_MATCHES."""
    node_pk = sender_node(engine, actor, institution_pk, ae_title, policy)
    wanted = check_keys(keys)
    if pacs is None:
        raise InvalidQuery("this Ferry cannot reach nodes from here")
    answers = pacs.find_studies(
        node_pk, wanted, requested_by=actor.label, institution_pk=institution_pk
    )
    found = [from_keywords(ae_title, answer) for answer in answers[:MAX_MATCHES]]
    return [candidate for candidate in found if candidate.study_uid]


def add_node_studies(
    engine: Engine,
    actor: Actor,
    public_id: str,
    ae_title: str,
    study_uids: Sequence[str],
    policy: PolicySnapshot,
    *,
    send: bool,
    max_attempts: int = FETCH_ATTEMPTS,
) -> Transfer:
    """Queues the fetch of the studies into the draft (and its sending, with `send`): a job of
    `max_attempts` runs while the node cannot be reached."""
    transfer = sending.open_draft(engine, actor, public_id)
    node_pk = sender_node(engine, actor, transfer.sender_institution_pk, ae_title, policy)
    uids = list(dict.fromkeys(uid.strip() for uid in study_uids if uid.strip()))
    if not uids:
        raise InvalidQuery("pick at least one study on the node")
    if len(uids) > sending.MAX_STUDIES:
        raise InvalidQuery(f"a transfer holds at most {sending.MAX_STUDIES} studies")
    if JobQueue(engine).underway(FETCH_FOR_TRANSFER, "transfer", transfer.public_id):
        raise Conflict("studies are already being fetched into this transfer")
    payload = {
        "transfer": transfer.public_id,
        "node_pk": node_pk,
        "studies": uids,
        "send": send,
        **actor_payload(actor),
    }
    then = "; sent when they are in" if send else ""
    reason = f"fetching {len(uids)} studies from {ae_title}{then}"
    with Session(engine) as session:
        note_change(session, transfer.pk or 0, TransferStatus.DRAFT, actor=actor.label,
                    reason=reason, now=actor.now)  # fmt: skip
        enqueue(session.connection(), FETCH_FOR_TRANSFER, payload, now=actor.now,
                max_attempts=max_attempts)  # fmt: skip
        session.commit()
    decision = sending.may_send_for(actor, transfer.sender_institution_pk, policy)
    audit_step(engine, actor, transfer, "transfer", decision, studies=uids, step="fetching",
               node=ae_title)  # fmt: skip
    return load_transfer(engine, public_id)


def fetch_handler(services: FetchServices) -> Callable[[ClaimedJob], str]:
    """The job: fetch each study into the draft, noting each; send when all are in. A node
    that cannot be reached is tried again later (the job's attempts, with backoff); a run
    after that fetches only the studies not yet in the draft."""
    archive, pacs, enqueue_forward = services.archive, services.pacs, services.enqueue_forward
    policy, clock = services.policy, services.clock

    def fetch(job: ClaimedJob) -> str:
        payload = job.payload
        actor = actor_from_payload(archive.engine, payload, clock())
        transfer = load_transfer(archive.engine, str(payload["transfer"]))
        if transfer.status != TransferStatus.DRAFT:
            return f"the transfer is {transfer.status}: nothing fetched"
        uids: list[str] = list(payload["studies"])
        run = _fetch(archive, actor, transfer, int(payload["node_pk"]), uids, policy(), pacs)
        failed = run.failed
        if run.unavailable is not None:
            later = job.attempts < job.max_attempts
            if later and not failed:
                why = trying_again(run.node_title, str(run.unavailable), job)
                note_on_draft(archive.engine, actor, transfer, why)
                raise JobFailed(str(run.unavailable)[:1000])
            gave_up = f"could not fetch {len(run.left)} studies from {run.node_title}: " + str(
                run.unavailable
            )
            note_on_draft(archive.engine, actor, transfer, gave_up)
            failed = failed + [f"{uid[:64]}: {run.unavailable}"[:300] for uid in run.left]
        return finish(archive, actor, transfer, failed=failed, total=len(uids), done="fetched",
                      send=bool(payload.get("send")), policy=policy,
                      enqueue_forward=enqueue_forward)  # fmt: skip

    return fetch


@dataclass(frozen=True)
class _Run:
    """One run of the fetch: the reasons of studies that failed, and, if the node could not
    be reached, why and the studies left untried."""

    node_title: str
    failed: list[str]
    unavailable: NodeUnavailable | None = None
    left: tuple[str, ...] = ()


def _fetch(
    archive: Archive,
    actor: Actor,
    transfer: Transfer,
    node_pk: int,
    uids: Sequence[str],
    policy: PolicySnapshot,
    pacs: RemotePacs,
) -> _Run:
    """Fetches each study not yet in the draft and adds it, noting each; stops at a node that
    cannot be reached (the rest would fail the same way)."""
    node = policy.nodes.get(node_pk)
    title = node.ae_title if node is not None else "a node no longer there"
    with Session(archive.engine) as session:
        in_draft = set(study_uids(session, transfer))
    failed: list[str] = []
    for number, uid in enumerate(uids, start=1):
        if uid in in_draft:  # fetched by an earlier run
            continue
        try:
            if node is None or node.institution_pk != transfer.sender_institution_pk:
                raise FerryError("the node is no longer the sending institution's")
            pacs.retrieve_study(node_pk, uid, requested_by=actor.label,
                                institution_pk=transfer.sender_institution_pk)  # fmt: skip
        except NodeUnavailable as error:
            left = tuple(u for u in uids[number - 1 :] if u not in in_draft)
            return _Run(title, failed, error, left)
        except FerryError as error:
            failed.append(f"{uid[:64]}: {error}"[:300])
            why = f"could not fetch {uid[:64]} from {title}: {error}"
            note_on_draft(archive.engine, actor, transfer, why)
            continue
        sending.add_studies(archive.engine, transfer, [uid])
        fetched = f"fetched {uid[:64]} from {title} ({number} of {len(uids)})"
        note_on_draft(archive.engine, actor, transfer, fetched)
    return _Run(title, failed)
