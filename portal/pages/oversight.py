"""Oversight pages of one institution (`/institutions/{code}/oversight/...`): the Transaction
Audit Summary, the System Audit Trail (scoped to the institution) and statistics, each with a
link to the same reading as CSV.

Each page runs the oversight API's own operation (`list_transactions`, `search_audit_trail`,
`get_statistics`) for the person, so who may read (the `audit` action: the institution's
administrators and auditors), the refusals (403 for a member without the right, 404 for an
institution they cannot see) and the audit of every reading are the API's. The "Oversight"
tab is shown only to those the same decision allows.

No patient identifier ever goes in a URL (the address bar, the history, every proxy's log): the
searches of the transactions and the audit trail are posted with the session's CSRF token, as the
dashboard's "find a patient" is. A search with no patient ID or accession number is sent on to
the same page with its filters in the URL (bookmarkable); one with them is answered in place, and
its pages and its CSV are posted too, the filters in the body. A patient filter in a URL is
ignored. Statistics carry no patient data: their filters stay in the URL and the CSV is the API's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.models import TransferStatus
from exchange.oversight.transactions import SORTS
from exchange.request_models import RequestStatus
from foundation.errors import InvalidQuery
from portal.openapi import Call
from portal.oversight_api import get_statistics, list_transactions, search_audit_trail
from portal.oversight_schemas import (
    AuditTrailOut,
    AuditTrailSearch,
    StatisticsOut,
    StatisticsQuery,
    TransactionsOut,
    TransactionsSearch,
)
from portal.pages.admin import may_oversee
from portal.pages.dashboard import allowed_views
from portal.pages.session import Place, Visitor, render, run_operation, signed_in

PAGE_SIZE = 25
AUDIT_PAGE_SIZE = 50
TABS = (
    ("transactions", "Transactions"),
    ("audit", "Audit trail"),
    ("statistics", "Statistics"),
)
PATIENT_FILTERS = ("patient_id", "accession")
TRANSACTION_FILTERS = ("direction", "state", "from", "to", "patient_id", "accession",
                       "counterpart", "sort", "order")  # fmt: skip
AUDIT_FILTERS = ("patient_id", "transaction", "accession", "user", "from", "to")
STATISTICS_FILTERS = ("interval", "from", "to")
SORT_WORDS = {
    "created": "Began",
    "sent": "Sent",
    "delivered": "Delivered",
    "viewed": "Viewed",
    "downloaded": "Downloaded",
    "answered": "Answered",
    "state": "State",
    "kind": "Kind",
    "patient_id": "Patient ID",
    "accession_number": "Accession number",
}
STATES = sorted({s.value for s in TransferStatus} | {s.value for s in RequestStatus})
MEASURES = {
    "request-answer": "Request to answer",
    "sent-delivered": "Sent to delivered",
    "delivered-downloaded": "Delivered to downloaded",
    "sent-downloaded": "Sent to downloaded",
}


Query = TypeVar("Query", bound=BaseModel)


def _query(model: type[Query], values: Mapping[str, Any]) -> Query:
    """The API's own query model from the URL; a refusal is a 400 page with the API's reasons."""
    try:
        return model.model_validate(dict(values), strict=False)
    except ValidationError as error:
        reasons = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"]).replace("_", " ").strip()
            text = str(item["msg"]).removeprefix("Value error, ")
            reasons.append(f"{where}: {text}" if where else text)
        raise InvalidQuery("; ".join(reasons)) from None


@dataclass(frozen=True)
class Asked:
    """What a person asked a list for: from the URL (GET) or the posted form (POST)."""

    filters: dict[str, str]
    position: str  # the offset or the before_pk, as sent
    posted: bool  # a patient filter is among them: pages and CSV are posted too

    def page(self, **position: object) -> dict[str, str]:
        """The fields that show another page of the same search."""
        moved = {k: str(v) for k, v in position.items() if v not in (None, "", 0)}
        return {**self.filters, **moved}


def _asked(request: Request, visitor: Visitor, names: Iterable[str], position: str) -> Asked:
    """The filters asked for; a patient filter only from a posted form, never from the URL."""
    source: Mapping[str, str] = visitor.form if request.method == "POST" else request.query_params
    if request.method != "POST":
        names = [name for name in names if name not in PATIENT_FILTERS]
    filters = {name: source[name].strip() for name in names if source.get(name, "").strip()}
    posted = any(name in filters for name in PATIENT_FILTERS)
    return Asked(filters, source.get(position, ""), posted)


def _offset(text: str) -> int:
    return int(text) if text.isdecimal() and len(text) <= 7 else 0


def _before(text: str) -> int | None:
    return int(text) if text.isdecimal() and len(text) <= 18 else None


def _csv_link(view: str, place: Place, filters: dict[str, str]) -> str:
    return f"/api/oversight/{view}?" + urlencode(
        {"institution": place.code, **filters, "format": "csv"}
    )


def _bookmarkable(
    request: Request, visitor: Visitor, place: Place, asked: Asked
) -> Response | None:
    """A posted search without patient data: sent on to the same page, its filters in the URL
    (for those who may read it: anyone else is refused by the operation itself)."""
    if request.method != "POST" or asked.posted or not may_oversee(visitor, place):
        return None
    return RedirectResponse(request.url.path + _query_string(asked.filters), status_code=303)


def _query_string(fields: Mapping[str, str]) -> str:
    return "?" + urlencode(fields) if fields else ""


def _context(place: Place, tab: str, visitor: Visitor, **values: object) -> dict[str, object]:
    return {
        "place": place,
        "oversight_tab": tab,
        "oversight_tabs": TABS,
        "has_lists": bool(allowed_views(visitor, place)),
        **values,
    }


def _transactions(call: Call) -> TransactionsOut:
    answer = list_transactions(call)
    assert isinstance(answer, TransactionsOut)  # format=json: never the CSV stream
    return answer


@signed_in
async def transactions_page(request: Request, visitor: Visitor) -> Response:
    """The Transaction Audit Summary; posted when it is searched (see the module's docstring)."""
    place = visitor.place(request.path_params["code"])
    asked = _asked(request, visitor, TRANSACTION_FILTERS, "offset")
    offset = _offset(asked.position)
    values = {**asked.filters, "institution": place.code, "offset": offset, "limit": PAGE_SIZE}
    search = _query(TransactionsSearch, {**values, "format": "json"})  # a page, whatever Accept
    moved = _bookmarkable(request, visitor, place, asked)
    if moved is not None:  # after the check: a bad filter is refused, not put in a URL
        return moved
    found = await run_operation(request, visitor, _transactions, body=search)
    pages = {}
    if offset > 0:
        pages["previous"] = asked.page(offset=max(offset - PAGE_SIZE, 0))
    if offset + PAGE_SIZE < found.total:
        pages["next"] = asked.page(offset=offset + PAGE_SIZE)
    context = _context(
        place,
        "transactions",
        visitor,
        found=found,
        filters=asked.filters,
        posted=asked.posted,
        pages=pages,
        states=STATES,
        sorts=[(key, SORT_WORDS.get(key, key)) for key in SORTS],
    )
    return render(request, "oversight/transactions.html", context, visitor=visitor,
                  timezone=place.timezone)  # fmt: skip


def _audit_trail(call: Call) -> AuditTrailOut:
    answer = search_audit_trail(call)
    assert isinstance(answer, AuditTrailOut)  # format=json: never the CSV stream
    return answer


@signed_in
async def audit_page(request: Request, visitor: Visitor) -> Response:
    """The System Audit Trail; posted when it is searched (see the module's docstring)."""
    place = visitor.place(request.path_params["code"])
    asked = _asked(request, visitor, AUDIT_FILTERS, "before_pk")
    before = _before(asked.position)
    values = {**asked.filters, "institution": place.code, "before_pk": before,
              "limit": AUDIT_PAGE_SIZE}  # fmt: skip
    search = _query(AuditTrailSearch, {**values, "format": "json"})
    moved = _bookmarkable(request, visitor, place, asked)
    if moved is not None:
        return moved
    found = await run_operation(request, visitor, _audit_trail, body=search)
    pages = {}
    if before is not None:
        pages["first"] = asked.page()
    if found.next_before_pk is not None:
        pages["next"] = asked.page(before_pk=found.next_before_pk)
    context = _context(
        place,
        "audit",
        visitor,
        found=found,
        filters=asked.filters,
        posted=asked.posted,
        pages=pages,
    )
    return render(request, "oversight/audit.html", context, visitor=visitor,
                  timezone=place.timezone)  # fmt: skip


@signed_in
async def transactions_csv(request: Request, visitor: Visitor) -> Response:
    """Every transaction the posted filters match, as CSV: the API's own stream."""
    return await _csv(request, visitor, TRANSACTION_FILTERS, "offset",
                      TransactionsSearch, list_transactions)  # fmt: skip


@signed_in
async def audit_csv(request: Request, visitor: Visitor) -> Response:
    """Every audit event the posted filters match, as CSV: the API's own stream."""
    return await _csv(request, visitor, AUDIT_FILTERS, "before_pk",
                      AuditTrailSearch, search_audit_trail)  # fmt: skip


async def _csv(
    request: Request,
    visitor: Visitor,
    filters: Iterable[str],
    cursor: str,
    model: type[BaseModel],
    operation: Callable[[Call], object],
) -> Response:
    """A search's posted filters run as the API's CSV operation, never cached by the browser."""
    place = visitor.place(request.path_params["code"])
    asked = _asked(request, visitor, filters, cursor)
    search = _query(model, {**asked.filters, "institution": place.code, "format": "csv"})
    answer = await run_operation(request, visitor, operation, body=search)
    assert isinstance(answer, Response)  # format=csv: always the stream
    answer.headers["Cache-Control"] = "no-store"
    return answer


def _statistics(call: Call) -> StatisticsOut:
    answer = get_statistics(call)
    assert isinstance(answer, StatisticsOut)  # format=json: never the CSV stream
    return answer


def duration(seconds: float | None) -> str:
    """A turnaround as a person reads it: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return ""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def size(count: int) -> str:
    """Bytes in the decimal units a person expects: 950 B, 1.2 MB, 3.4 GB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"  # pragma: no cover - the loop always returns


@signed_in
async def statistics_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    filters = {k: v.strip() for k, v in request.query_params.items()
               if k in STATISTICS_FILTERS and v.strip()}  # fmt: skip
    values = {**filters, "institution": place.code, "format": "json"}
    query = _query(StatisticsQuery, values)
    found = await run_operation(request, visitor, _statistics, query=query)
    slowest = max((t.p90_seconds or 0 for t in found.turnaround), default=0)
    context = _context(
        place,
        "statistics",
        visitor,
        found=found,
        filters=filters,
        interval=found.interval,
        most=max((v.transactions for v in found.volumes), default=0),
        slowest=slowest,
        measures=MEASURES,
        duration=duration,
        size=size,
        csv_link=_csv_link("statistics", place, filters),
    )
    return render(request, "oversight/statistics.html", context, visitor=visitor,
                  timezone=place.timezone)  # fmt: skip
