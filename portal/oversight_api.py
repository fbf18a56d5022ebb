"""Oversight under `/api/oversight`: an institution's transactions, audit trail and statistics.

Each answer is about one institution, named by code, and is for those who may `audit` it
(`policy.decide`): its administrators and auditors, and system administrators. An institution
the caller has no tie to answers like one that does not exist (404); a member without the
right is told why (403); both are audited. Reading is audited too (DCM 110101 "Audit Log
Used"), with the criteria. JSON by default; CSV, streamed, with `format=csv` or
`Accept: text/csv`.

A Patient ID or accession number is never read from a URL (the address would carry it into
access logs and proxies): the transactions and the trail are searched by them with a `POST` to
`.../search`, the criteria in a JSON body; the `GET` forms take every other filter. A day
(`YYYY-MM-DD`) in `from` and `to` is one of the institution's own time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from starlette.responses import StreamingResponse

from audit.search import AuditEntry, AuditQuery, iter_events, search_events
from audit.trail import AuditRecord, record
from exchange.oversight import statistics, trail
from exchange.oversight._csv import iter_csv
from exchange.oversight.days import local_zone
from exchange.oversight.transactions import (
    CSV_HEADER,
    Transaction,
    TransactionQuery,
    as_row,
    check_query,
    iter_transactions,
    search_transactions,
)
from foundation.errors import InvalidQuery
from policy.decision import InstitutionFacts
from policy.roles import Action
from policy.store.institutions import get_institution
from portal.admin_access import Access
from portal.openapi import Call, Operation
from portal.oversight_schemas import (
    AuditEventOut,
    AuditTrailFilters,
    AuditTrailOut,
    AuditTrailQuery,
    AuditTrailSearch,
    FailureOut,
    RangeQuery,
    StatisticsOut,
    StatisticsQuery,
    TransactionFilters,
    TransactionOut,
    TransactionsOut,
    TransactionsQuery,
    TransactionsSearch,
    TurnaroundOut,
    VolumeOut,
)

CSV = "text/csv"


def _engine(call: Call) -> Engine:
    engine: Engine = call.state.archive.engine
    return engine


def overseen(access: Access, code: str) -> InstitutionFacts:
    """The institution if the caller may audit it; 404 (no tie) or 403 (a member), audited."""
    return access.require_code(code, Action.AUDIT)


def criteria(call: Call) -> Any:
    """What was asked: the search's body (POST), else the query string (GET)."""
    return call.body if call.body is not None else call.query


def zone_of(call: Call, facts: InstitutionFacts) -> ZoneInfo:
    return local_zone(get_institution(_engine(call), facts.pk).timezone)


def bounds(q: RangeQuery, zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """`from` and `to` as times, a day being one of the institution's own (as its pages show)."""
    try:
        return q.bounds_in(zone)
    except ValueError as error:  # a day and a time, in order only before the zone is applied
        raise InvalidQuery(str(error)) from None


def wants_csv(call: Call) -> bool:
    fmt = getattr(criteria(call), "format", None)
    if fmt is not None:
        return bool(fmt == "csv")
    accept = call.request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == CSV for part in accept.split(","))


def audit_reading(access: Access, facts: InstitutionFacts, view: str, **criteria: Any) -> None:
    """Reading oversight is itself an audit event, of the institution read about."""
    call = access.call
    request = call.request
    used = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in criteria.items()}
    record(
        _engine(call),
        AuditRecord(
            action=Action.AUDIT.value,
            outcome="allowed",
            actor=call.principal.label,
            actor_kind=call.principal.kind.value,
            institution_pk=facts.pk,
            rule="membership-role" if facts.pk in call.principal.memberships else "system-admin",
            reason=f"{view} of {facts.code}",
            patient_id=str(criteria.get("patient_id") or ""),
            accession_number=str(criteria.get("accession") or ""),
            transaction=str(criteria.get("transaction") or ""),
            client_address=request.client.host if request.client else "",
            detail={"view": view, "path": request.url.path, "criteria": used},
        ),
    )


def csv_response(
    header: Sequence[str], rows: Iterable[Sequence[object]], name: str
) -> StreamingResponse:
    disposition = f'attachment; filename="{name}.csv"'  # codes and dates only: no patient data
    return StreamingResponse(
        iter_csv(header, rows),
        media_type=f"{CSV}; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )


def _file_name(view: str, code: str, now: datetime) -> str:
    return f"{view}-{code}-{now.astimezone(UTC):%Y%m%d-%H%M%S}"


# --- the Transaction Audit Summary -------------------------------------------------------------


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def transaction_query(
    call: Call, access: Access, facts: InstitutionFacts, q: TransactionFilters
) -> Any:
    counterpart = None
    if q.counterpart is not None:
        counterpart = access.pk_of(q.counterpart) or -1  # unknown: simply no rows
    patient_id, accession = q.patient_filters
    since, until = bounds(q, zone_of(call, facts))
    query = TransactionQuery(
        institution_pk=facts.pk,
        direction=q.direction,
        kinds=_split(q.kind),
        states=_split(q.state),
        counterpart_pk=counterpart,
        patient_id=patient_id,
        accession_number=accession,
        since=since,
        until=until,
        sort=q.sort,
        descending=q.order == "desc",
    )
    check_query(query)  # before the reading is recorded: a refused query read nothing
    return query


def _transaction_out(access: Access, item: Transaction) -> TransactionOut:
    sender, receiver = access.code_of(item.sender_pk), access.code_of(item.receiver_pk)
    values = {**item.__dict__, "sender": sender, "receiver": receiver}
    values["counterpart"] = receiver if item.direction == "sent" else sender
    return TransactionOut.model_validate(values)


def list_transactions(call: Call) -> TransactionsOut | StreamingResponse:
    access, q = Access(call), criteria(call)
    assert isinstance(q, TransactionFilters)
    facts = overseen(access, q.institution)
    query = transaction_query(call, access, facts, q)
    csv = wants_csv(call)
    audit_reading(access, facts, "transactions", **q.model_dump(exclude_none=True, by_alias=True))
    if csv:
        codes = {pk: f.code for pk, f in access.snapshot.institutions.items()}
        rows: Iterator[Sequence[object]] = (
            as_row(item, codes) for item in iter_transactions(_engine(call), query)
        )
        return csv_response(CSV_HEADER, rows, _file_name("transactions", facts.code, call.now))
    total, items = search_transactions(_engine(call), query, q.offset, q.limit)
    return TransactionsOut(
        institution=facts.code,
        total=total,
        offset=q.offset,
        limit=q.limit,
        items=[_transaction_out(access, item) for item in items],
    )


# --- the System Audit Trail, scoped -----------------------------------------------------------


def _audit_query(call: Call, facts: InstitutionFacts, q: AuditTrailFilters) -> AuditQuery:
    patient_id, accession = q.patient_filters
    since, until = bounds(q, zone_of(call, facts))
    return AuditQuery(
        patient_id=patient_id,
        study_uid=q.study,
        accession_number=accession,
        transaction=q.transaction,
        actor=q.user,
        action=q.action,
        outcome=q.outcome,
        since=since,
        until=until,
        within=trail.visible_to(facts.pk),
    )


def _event_out(access: Access, entry: AuditEntry) -> AuditEventOut:
    values = entry.as_json()
    values["at"] = entry.at
    values["institution"] = access.code_of(entry.institution_pk or 0)
    return AuditEventOut.model_validate(values)


def search_audit_trail(call: Call) -> AuditTrailOut | StreamingResponse:
    access, q = Access(call), criteria(call)
    assert isinstance(q, AuditTrailFilters)
    facts = overseen(access, q.institution)
    query = _audit_query(call, facts, q)
    audit_reading(access, facts, "audit trail", **q.model_dump(exclude_none=True, by_alias=True))
    if wants_csv(call):
        codes = {pk: f.code for pk, f in access.snapshot.institutions.items()}
        rows = (trail.as_row(entry, codes) for entry in iter_events(_engine(call), query))
        return csv_response(trail.CSV_HEADER, rows, _file_name("audit", facts.code, call.now))
    page = search_events(_engine(call), query, q.limit, q.before_pk)
    return AuditTrailOut(
        institution=facts.code,
        events=[_event_out(access, entry) for entry in page.entries],
        next_before_pk=page.next_before_pk,
    )


# --- statistics --------------------------------------------------------------------------------


def get_statistics(call: Call) -> StatisticsOut | StreamingResponse:
    access, q = Access(call), call.query
    assert isinstance(q, StatisticsQuery)
    facts = overseen(access, q.institution)
    codes = {pk: f.code for pk, f in access.snapshot.institutions.items()}
    zone = zone_of(call, facts)
    since, until = bounds(q, zone)  # its days, as its periods
    report = statistics.compute(
        _engine(call), facts.pk, since, until, q.interval, codes, timezone=zone.key
    )
    audit_reading(access, facts, "statistics", **q.model_dump(exclude_none=True, by_alias=True))
    if wants_csv(call):
        rows = statistics.csv_rows(report)
        name = _file_name("statistics", facts.code, call.now)
        return csv_response(statistics.CSV_HEADER, rows, name)
    code = access.code_of
    return StatisticsOut(
        institution=facts.code,
        interval=report.interval,
        timezone=report.timezone,
        since=report.since,
        until=report.until,
        volumes=[
            VolumeOut(**{**v.__dict__, "counterpart": code(v.counterpart_pk)})
            for v in report.volumes
        ],
        turnaround=[TurnaroundOut(**t.__dict__) for t in report.turnaround],
        failures=[
            FailureOut(**{**f.__dict__, "counterpart": code(f.counterpart_pk)})
            for f in report.failures
        ],
    )


def search_transactions_posted(call: Call) -> TransactionsOut | StreamingResponse:
    """The Transaction Audit Summary searched with a body: patient filters stay out of URLs."""
    return list_transactions(call)


def search_audit_trail_posted(call: Call) -> AuditTrailOut | StreamingResponse:
    """The scoped audit trail searched with a body: patient filters stay out of URLs."""
    return search_audit_trail(call)


_O = "oversight"
OPERATIONS: list[Operation] = [
    Operation("GET", "/oversight/transactions", list_transactions,
              "the Transaction Audit Summary: what an institution sent and received "
              "(transfers, direct pushes, requests) with their times and states; filtered, "
              "sorted, paged; CSV with format=csv or Accept: text/csv. Patient ID and "
              "accession: POST /oversight/transactions/search", _O,
              response=TransactionsOut, query=TransactionsQuery, streams=CSV),
    Operation("POST", "/oversight/transactions/search", search_transactions_posted,
              "the Transaction Audit Summary searched with the criteria in the body, patient "
              "ID and accession among them (never in a URL); the same answer as the GET", _O,
              body=TransactionsSearch, response=TransactionsOut, streams=CSV),
    Operation("GET", "/oversight/audit", search_audit_trail,
              "the System Audit Trail of an institution: events about its studies, "
              "transactions, people and nodes; newest first, paged by before_pk; CSV (every "
              "match, oldest first) with format=csv or Accept: text/csv. Patient ID and "
              "accession: POST /oversight/audit/search", _O,
              response=AuditTrailOut, query=AuditTrailQuery, streams=CSV),
    Operation("POST", "/oversight/audit/search", search_audit_trail_posted,
              "the System Audit Trail of an institution searched with the criteria in the "
              "body, patient ID and accession among them (never in a URL); the same answer "
              "as the GET", _O,
              body=AuditTrailSearch, response=AuditTrailOut, streams=CSV),
    Operation("GET", "/oversight/statistics", get_statistics,
              "an institution's volumes (per day, week or month, direction, counterpart, "
              "modality), turnaround (median, 90th percentile) and failures; CSV with "
              "format=csv or Accept: text/csv", _O,
              response=StatisticsOut, query=StatisticsQuery, streams=CSV),
]  # fmt: skip
