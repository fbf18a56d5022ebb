"""The Transaction Audit Summary: what one institution sent and received, with its times.

A transaction is a transfer made by people or tools (`transfer`), a study a node pushed to a
route (`push`), or a request for imaging (`request`); downloads and views are times and states
of the transfer they belong to. Each row is seen from the institution asked about: `sent` when
it sent the transfer or asked the request, `received` otherwise (a draft is its sender's
alone). A transfer's patient and accession come from the archive's index while its study is
there, and from the transfer's own copy of them once it is gone (`exchange.transfer_facts`).
Times come from the transfers' own history (`transfer_event`), so nothing is stored twice; a
request's sent, delivered, viewed and downloaded times are those of the transfer that answered
it. Everything (filters, the total, the order, the page) is one SQL query.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    String,
    and_,
    case,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    type_coerce,
    union_all,
)

from exchange.models import Origin, TransferStatus
from exchange.oversight._tables import (
    PATIENT,
    REQUEST,
    REQUEST_ANSWER,
    STUDY,
    TRANSFER,
    TRANSFER_EVENT,
    TRANSFER_STUDY,
)
from exchange.request_models import RequestStatus
from foundation.errors import InvalidQuery

MAX_PAGE = 500
EXPORT_BATCH = 500
KINDS = ("transfer", "push", "request")
DIRECTIONS = ("sent", "received")
SORTS = (
    "created",
    "sent",
    "delivered",
    "viewed",
    "downloaded",
    "answered",
    "state",
    "kind",
    "patient_id",
    "accession_number",
)
_SENT = ("sent", "on-worklist", "delivering", "delivered", "partial", "failed", "refused")
_ARRIVED = ("on-worklist", "delivered")
ANSWERED = (
    RequestStatus.ANSWERED.value,
    RequestStatus.PARTLY_ANSWERED.value,
    RequestStatus.NOTHING_FOUND.value,
    RequestStatus.REJECTED.value,
)
_TIME = TRANSFER.c.created_at.type


@dataclass(frozen=True)
class TransactionQuery:
    """Every given criterion must hold. Times: since <= when the transaction began < until."""

    institution_pk: int
    direction: str | None = None
    kinds: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    counterpart_pk: int | None = None  # -1: an institution that does not exist (no rows)
    patient_id: str | None = None
    accession_number: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: str = "created"
    descending: bool = True


@dataclass(frozen=True)
class Transaction:
    id: str
    kind: str
    direction: str
    sender_pk: int
    receiver_pk: int
    patient_id: str
    accession_number: str
    studies: int
    state: str
    priority: str
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    viewed_at: datetime | None
    downloaded_at: datetime | None
    answered_at: datetime | None
    ended_from: str | None = None  # a transfer retention or a deletion ended: its state before


COLUMNS = tuple(f.name for f in fields(Transaction))


def check_query(query: TransactionQuery) -> None:
    """InvalidQuery, with the reason, for a criterion the query cannot use."""
    if query.direction is not None and query.direction not in DIRECTIONS:
        raise InvalidQuery(f"direction is one of {', '.join(DIRECTIONS)}")
    if any(kind not in KINDS for kind in query.kinds):
        raise InvalidQuery(f"kind is one of {', '.join(KINDS)}")
    if query.sort not in SORTS:
        raise InvalidQuery(f"sort is one of {', '.join(SORTS)}")
    for moment in (query.since, query.until):
        if moment is not None and moment.utcoffset() is None:
            raise InvalidQuery("times must carry a timezone")
    if query.since and query.until and query.since > query.until:
        raise InvalidQuery("the range starts after it ends")


def transfer_times(institution_pk: int) -> Any:
    """Per transfer of the institution (sent or received): the first time it was sent,
    arrived, was viewed and was downloaded. Only its transfers' history is grouped."""
    event, t = TRANSFER_EVENT.c, TRANSFER.c
    theirs = select(t.pk).where(
        or_(
            t.sender_institution_pk == institution_pk,
            t.destination_institution_pk == institution_pk,
        )
    )

    def first(*statuses: str) -> Any:
        return func.min(case((event.status.in_(statuses), event.at)))

    return (
        select(
            event.transfer_pk,
            first(*_SENT).label("sent"),
            first(*_ARRIVED).label("delivered"),
            first(TransferStatus.VIEWED.value).label("viewed"),
            first(TransferStatus.DOWNLOADED.value).label("downloaded"),
        )
        .where(event.transfer_pk.in_(theirs))
        .group_by(event.transfer_pk)
        .subquery("times")
    )


def _studies_of(transfer: Any, study: Any) -> Any:
    """Study rows of the outer transfer: those it lists, or a pushed transfer's one."""
    listed = (
        select(TRANSFER_STUDY.c.study_instance_uid)
        .where(TRANSFER_STUDY.c.transfer_pk == transfer.pk)
        .correlate(TRANSFER)
    )
    return or_(
        study.study_instance_uid.in_(listed),
        study.study_instance_uid == transfer.study_instance_uid,
    )


def _transfer_branch(query: TransactionQuery) -> Select[Any]:
    t = TRANSFER.c
    times = transfer_times(query.institution_pk)
    first = STUDY.alias("first_study")
    first_patient = PATIENT.alias("first_patient")
    count = (
        select(func.count())
        .select_from(TRANSFER_STUDY)
        .where(TRANSFER_STUDY.c.transfer_pk == t.pk)
        .scalar_subquery()
    )
    me = query.institution_pk
    statement = (
        select(
            t.public_id.label("id"),
            case((t.origin == Origin.PUSH.value, "push"), else_="transfer").label("kind"),
            case((t.sender_institution_pk == me, "sent"), else_="received").label("direction"),
            t.sender_institution_pk.label("sender_pk"),
            t.destination_institution_pk.label("receiver_pk"),
            func.coalesce(first_patient.c.patient_id, t.patient_id).label("patient_id"),
            func.coalesce(first.c.accession_number, t.accession_number).label("accession_number"),
            case((count > 0, count), (t.study_instance_uid != "", 1), else_=0).label("studies"),
            t.status.label("state"),
            t.priority.label("priority"),
            t.created_at.label("created_at"),
            func.coalesce(t.sent_at, times.c.sent).label("sent_at"),
            times.c.delivered.label("delivered_at"),
            times.c.viewed.label("viewed_at"),
            times.c.downloaded.label("downloaded_at"),
            type_coerce(null(), _TIME).label("answered_at"),
            t.ended_from.label("ended_from"),
        )
        .select_from(TRANSFER)
        .outerjoin(times, times.c.transfer_pk == t.pk)
        .outerjoin(first, first.c.study_instance_uid == t.study_instance_uid)
        .outerjoin(first_patient, first_patient.c.pk == first.c.patient_pk)
    )
    mine = or_(
        t.sender_institution_pk == me,
        and_(t.destination_institution_pk == me, t.status != TransferStatus.DRAFT.value),
    )
    conditions: list[Any] = [mine]
    if query.direction == "sent":
        conditions.append(t.sender_institution_pk == me)
    elif query.direction == "received":
        conditions.append(t.destination_institution_pk == me)
    if query.counterpart_pk is not None:
        conditions.append(
            _between(
                t.sender_institution_pk, t.destination_institution_pk, me, query.counterpart_pk
            )
        )
    study, patient = STUDY.c, PATIENT.c
    on_studies = []
    if query.patient_id:
        on_studies.append(patient.patient_id == query.patient_id)
    if query.accession_number:
        on_studies.append(study.accession_number == query.accession_number)
    if on_studies:
        matching = (
            select(study.pk)
            .join(PATIENT, patient.pk == study.patient_pk)
            .where(_studies_of(t, study), *on_studies)
            .correlate(TRANSFER)  # the outer query's study and patient are other rows
        )
        conditions.append(or_(exists(matching), _remembered(query, t)))
    if query.kinds:
        conditions.append(
            case((t.origin == Origin.PUSH.value, "push"), else_="transfer").in_(query.kinds)
        )
    return statement.where(
        *conditions, *_common(query, t.status, t.created_at, ended_from=t.ended_from)
    )


def _remembered(query: TransactionQuery, t: Any) -> ColumnElement[bool]:
    """The transfer kept the facts of a study that matches, and has left the archive."""
    kept = TRANSFER_STUDY.c
    listed = [kept.transfer_pk == t.pk]
    own = []
    if query.patient_id:
        listed.append(kept.patient_id == query.patient_id)
        own.append(t.patient_id == query.patient_id)
    if query.accession_number:
        listed.append(kept.accession_number == query.accession_number)
        own.append(t.accession_number == query.accession_number)
    return or_(exists(select(kept.pk).where(*listed).correlate(TRANSFER)), and_(*own))


def _request_branch(query: TransactionQuery) -> Select[Any]:
    r = REQUEST.c
    answers = REQUEST_ANSWER.c
    answer = (
        select(answers.request_pk, func.min(answers.transfer_pk).label("transfer_pk"))
        .group_by(answers.request_pk)
        .subquery("answer")
    )
    sent = TRANSFER.alias("answer_transfer")
    times = transfer_times(query.institution_pk)
    me = query.institution_pk
    statement = (
        select(
            r.public_id.label("id"),
            literal("request").label("kind"),
            case((r.requesting_institution_pk == me, "sent"), else_="received").label("direction"),
            r.requesting_institution_pk.label("sender_pk"),
            r.asked_institution_pk.label("receiver_pk"),
            r.patient_id.label("patient_id"),
            r.accession_numbers.label("accession_number"),
            func.coalesce(
                select(func.count())
                .select_from(TRANSFER_STUDY)
                .where(TRANSFER_STUDY.c.transfer_pk == answer.c.transfer_pk)
                .scalar_subquery(),
                0,
            ).label("studies"),
            r.status.label("state"),
            r.urgency.label("priority"),
            r.created_at.label("created_at"),
            func.coalesce(sent.c.sent_at, times.c.sent).label("sent_at"),
            times.c.delivered.label("delivered_at"),
            times.c.viewed.label("viewed_at"),
            times.c.downloaded.label("downloaded_at"),
            case((r.status.in_(ANSWERED), r.closed_at)).label("answered_at"),
            type_coerce(null(), String).label("ended_from"),
        )
        .select_from(REQUEST)
        .outerjoin(answer, answer.c.request_pk == r.pk)
        .outerjoin(sent, sent.c.pk == answer.c.transfer_pk)
        .outerjoin(times, times.c.transfer_pk == answer.c.transfer_pk)
    )
    conditions: list[Any] = [or_(r.requesting_institution_pk == me, r.asked_institution_pk == me)]
    if query.direction == "sent":
        conditions.append(r.requesting_institution_pk == me)
    elif query.direction == "received":
        conditions.append(r.asked_institution_pk == me)
    if query.counterpart_pk is not None:
        conditions.append(
            _between(r.requesting_institution_pk, r.asked_institution_pk, me, query.counterpart_pk)
        )
    if query.patient_id:
        conditions.append(r.patient_id == query.patient_id)
    if query.accession_number:
        listed = literal("\\") + r.accession_numbers + literal("\\")
        conditions.append(listed.contains(f"\\{query.accession_number}\\", autoescape=True))
    return statement.where(*conditions, *_common(query, r.status, r.created_at))


def _between(sender: Any, receiver: Any, me: int, other: int) -> ColumnElement[bool]:
    return or_(and_(sender == me, receiver == other), and_(receiver == me, sender == other))


def _common(
    query: TransactionQuery, status: Any, created_at: Any, *, ended_from: Any = None
) -> list[ColumnElement[bool]]:
    """The state and time criteria. A state finds a transfer in it now, or one that ended from
    it (a failed transfer whose studies retention deleted is still found among the failed)."""
    conditions: list[ColumnElement[bool]] = []
    if query.states:
        in_state = status.in_(query.states)
        if ended_from is not None:
            in_state = or_(in_state, ended_from.in_(query.states))
        conditions.append(in_state)
    if query.since is not None:
        conditions.append(created_at >= query.since)
    if query.until is not None:
        conditions.append(created_at < query.until)
    return conditions


def _union(query: TransactionQuery) -> Any:
    check_query(query)
    branches = []
    if not query.kinds or {"transfer", "push"} & set(query.kinds):
        branches.append(_transfer_branch(query))
    if not query.kinds or "request" in query.kinds:
        branches.append(_request_branch(query))
    return union_all(*branches).subquery("transactions")


def _ordered(query: TransactionQuery, union: Any) -> Select[Any]:
    name = {
        "created": "created_at",
        "sent": "sent_at",
        "delivered": "delivered_at",
        "viewed": "viewed_at",
        "downloaded": "downloaded_at",
        "answered": "answered_at",
    }
    key = union.c[name.get(query.sort, query.sort)]
    blanks_last = case((key.is_(None), 1), else_=0)  # the same on SQLite and PostgreSQL
    direction = key.desc() if query.descending else key.asc()
    tie = union.c.id.desc() if query.descending else union.c.id.asc()
    return select(union).order_by(blanks_last, direction, tie)


def _rows(engine: Engine, statement: Select[Any]) -> list[Transaction]:
    with engine.connect() as connection:
        result = connection.execute(statement).mappings().all()
    return [Transaction(**{name: row[name] for name in COLUMNS}) for row in result]


def search_transactions(
    engine: Engine, query: TransactionQuery, offset: int = 0, limit: int = 50
) -> tuple[int, list[Transaction]]:
    """The total matching and one page, in the order asked (blank times last)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise InvalidQuery("offset must not be negative")
    union = _union(query)
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(union)).scalar_one()
    return int(total), _rows(engine, _ordered(query, union).offset(offset).limit(limit))


def iter_transactions(engine: Engine, query: TransactionQuery) -> Iterator[Transaction]:
    """Every match, in the order asked, read a batch at a time (each with its own connection,
    so a slow reader holds no database connection between batches). The query is checked
    now, before the first row is asked for: an export never breaks off for a bad criterion."""
    return _iter_batches(engine, _ordered(query, _union(query)))


def _iter_batches(engine: Engine, statement: Select[Any]) -> Iterator[Transaction]:
    offset = 0
    while True:
        batch = _rows(engine, statement.offset(offset).limit(EXPORT_BATCH))
        yield from batch
        if len(batch) < EXPORT_BATCH:
            return
        offset += EXPORT_BATCH


def as_row(item: Transaction, codes: Mapping[int, str]) -> Sequence[object]:
    """The CSV row (and the CLI line) of a transaction: institutions by code."""
    values: dict[str, object] = {name: getattr(item, name) for name in COLUMNS}
    values["sender_pk"] = codes.get(item.sender_pk, "")
    values["receiver_pk"] = codes.get(item.receiver_pk, "")
    return list(values.values())


CSV_HEADER = tuple(
    {"sender_pk": "sender", "receiver_pk": "receiver"}.get(name, name) for name in COLUMNS
)
