"""Query strings and answers of the oversight API: transactions, the audit trail, statistics."""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exchange.oversight.days import parse_moment, read_range
from exchange.oversight.transactions import SORTS
from portal.api_schemas import Code, Uid, _ListQuery

Moment = Annotated[
    str,
    Field(
        max_length=40,
        description="YYYY-MM-DD (a whole day of the institution's time zone) or an ISO 8601 "
        "time (UTC if no offset)",
        examples=["2026-12-01"],
    ),
]
Format = Literal["json", "csv"]
Sort = Literal[SORTS]  # type: ignore[valid-type]
PatientText = Annotated[str, Field(min_length=1, max_length=64)]
PATIENT_FILTERS = ("patient_id", "accession")
# A body is JSON: its numbers are numbers (a URL's are text, parsed by `_ListQuery`).
STRICT_BODY = ConfigDict(extra="forbid", strict=True)


class RangeQuery(_ListQuery):
    """One institution's oversight, over a time range; `format=csv` (or Accept: text/csv)."""

    institution: Code
    from_: Moment | None = Field(default=None, alias="from")
    to: Moment | None = None
    format: Format | None = None

    @field_validator("from_", "to")
    @classmethod
    def _readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            parse_moment(value, end=info.field_name == "to")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Any:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("'from' must come before 'to'")
        return self

    @property
    def since(self) -> datetime | None:
        return parse_moment(self.from_, end=False) if self.from_ else None

    @property
    def until(self) -> datetime | None:
        return parse_moment(self.to, end=True) if self.to else None

    @property
    def patient_filters(self) -> tuple[str | None, str | None]:
        """(patient_id, accession): none in a query string, any in a search's body."""
        return getattr(self, "patient_id", None), getattr(self, "accession", None)

    def bounds_in(self, zone: tzinfo) -> tuple[datetime | None, datetime | None]:
        """(since, until) with a day read as one of `zone`, the institution's own; ValueError
        when, so read, the range starts after it ends."""
        return read_range(self.from_, self.to, zone)


def refuse_patient_filters(values: Any, search: str) -> Any:
    """A query string never carries a patient identifier: it would be in every access log."""
    if isinstance(values, dict) and any(name in values for name in PATIENT_FILTERS):
        raise ValueError(f"patient_id and accession are never sent in a URL: POST them to {search}")
    return values


Listed = Annotated[str, Field(max_length=200, description="comma-separated")]


class TransactionFilters(RangeQuery):
    direction: Literal["sent", "received"] | None = None
    kind: Listed | None = Field(default=None, description="transfer, push, request (commas)")
    state: Listed | None = Field(default=None, description="states, comma-separated")
    counterpart: Code | None = Field(default=None, description="the other institution's code")
    sort: Sort = "created"
    order: Literal["asc", "desc"] = "desc"
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class TransactionsQuery(TransactionFilters):
    """`GET /oversight/transactions`: every filter but a patient's (see the search)."""

    @model_validator(mode="before")
    @classmethod
    def _no_patient_data(cls, values: Any) -> Any:
        return refuse_patient_filters(values, "/api/oversight/transactions/search")


class TransactionsSearch(TransactionFilters):
    """`POST /oversight/transactions/search`: the same, with Patient ID and accession number."""

    model_config = STRICT_BODY
    patient_id: PatientText | None = None
    accession: PatientText | None = Field(default=None, description="an accession number")


class TransactionOut(BaseModel):
    id: str
    kind: str
    direction: str
    sender: str
    receiver: str
    counterpart: str
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


class TransactionsOut(BaseModel):
    institution: str
    total: int
    offset: int
    limit: int
    items: list[TransactionOut]


class AuditTrailFilters(RangeQuery):
    study: Uid | None = None
    transaction: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    user: Annotated[str, Field(min_length=1, max_length=320)] | None = Field(
        default=None, description="who acted, as the trail names them: user:EMAIL, node:AE, ..."
    )
    action: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")] | None = None
    outcome: Literal["allowed", "denied", "failed"] | None = None
    before_pk: Annotated[int, Field(ge=1, le=2**62)] | None = Field(
        default=None, description="the next (older) page: next_before_pk of the last answer"
    )
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class AuditTrailQuery(AuditTrailFilters):
    """`GET /oversight/audit`: every filter but a patient's (see the search)."""

    @model_validator(mode="before")
    @classmethod
    def _no_patient_data(cls, values: Any) -> Any:
        return refuse_patient_filters(values, "/api/oversight/audit/search")


class AuditTrailSearch(AuditTrailFilters):
    """`POST /oversight/audit/search`: the same, with Patient ID and accession number."""

    model_config = STRICT_BODY
    patient_id: PatientText | None = None
    accession: PatientText | None = Field(default=None, description="an accession number")


class AuditEventOut(BaseModel):
    pk: int
    at: datetime
    actor: str
    actor_kind: str
    institution: str
    action: str
    outcome: str
    rule: str
    reason: str
    study_uid: str
    patient_id: str
    accession_number: str
    transaction: str
    client_address: str
    detail: dict[str, Any]


class AuditTrailOut(BaseModel):
    institution: str
    events: list[AuditEventOut]
    next_before_pk: int | None


class StatisticsQuery(RangeQuery):
    interval: Literal["day", "week", "month"] = "day"


class VolumeOut(BaseModel):
    period: date
    direction: str
    counterpart: str
    modality: str
    transactions: int
    studies: int
    instances: int
    bytes: int


class TurnaroundOut(BaseModel):
    measure: str
    direction: str
    count: int
    median_seconds: float | None
    p90_seconds: float | None
    sampled: bool = Field(description="true when only the newest pairs were measured")


class FailureOut(BaseModel):
    period: date
    direction: str
    counterpart: str
    kind: str
    state: str
    count: int


class StatisticsOut(BaseModel):
    institution: str
    interval: str
    timezone: str = Field(description="the institution's: its days, weeks and months are counted")
    since: datetime | None
    until: datetime | None
    volumes: list[VolumeOut]
    turnaround: list[TurnaroundOut]
    failures: list[FailureOut]
