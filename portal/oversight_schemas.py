"""Query strings and answers of the oversight API: transactions, the audit trail, statistics."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from exchange.oversight.transactions import SORTS
from foundation.clock import as_utc
from portal.api_schemas import Code, Uid, _ListQuery

Moment = Annotated[
    str,
    Field(
        max_length=40,
        description="YYYY-MM-DD (a whole UTC day) or an ISO 8601 time (UTC if no offset)",
        examples=["2026-12-01"],
    ),
]
Format = Literal["json", "csv"]
Sort = Literal[SORTS]  # type: ignore[valid-type]


def parse_moment(text: str, *, end: bool, zone: tzinfo = UTC) -> datetime:
    """A day means from its start (`end` False) or through its end (`end` True), in `zone`."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end and day == date.max:
                raise ValueError
            local = datetime.combine(day + timedelta(days=1) if end else day, time(), zone)
            return local.astimezone(UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ValueError(f"expected YYYY-MM-DD or an ISO 8601 time, got {text[:40]!r}") from None
    return as_utc(moment)


class _RangeQuery(_ListQuery):
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

    def bounds_in(self, zone: tzinfo) -> tuple[datetime | None, datetime | None]:
        """(since, until) with a day read as one of `zone` (an institution's statistics)."""
        since = parse_moment(self.from_, end=False, zone=zone) if self.from_ else None
        until = parse_moment(self.to, end=True, zone=zone) if self.to else None
        return since, until


Listed = Annotated[str, Field(max_length=200, description="comma-separated")]


class TransactionsQuery(_RangeQuery):
    direction: Literal["sent", "received"] | None = None
    kind: Listed | None = Field(default=None, description="transfer, push, request (commas)")
    state: Listed | None = Field(default=None, description="states, comma-separated")
    counterpart: Code | None = Field(default=None, description="the other institution's code")
    patient_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    accession: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    sort: Sort = "created"
    order: Literal["asc", "desc"] = "desc"
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


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


class TransactionsOut(BaseModel):
    institution: str
    total: int
    offset: int
    limit: int
    items: list[TransactionOut]


class AuditTrailQuery(_RangeQuery):
    patient_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    study: Uid | None = None
    accession: Annotated[str, Field(min_length=1, max_length=64)] | None = None
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


class StatisticsQuery(_RangeQuery):
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
