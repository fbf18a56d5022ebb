"""Request and response bodies of the retention API: periods and holds (OpenAPI schemas)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from exchange.retention_models import HOLD_REASON_MAX_CHARS
from portal.api_schemas import Input, Uid

PeriodDays = Annotated[int, Field(ge=1, le=36500, description="days after arrival")]
WarnDays = Annotated[int, Field(ge=0, le=36500, description="days before the deletion")]
Text64 = Annotated[str, Field(min_length=1, max_length=64)]


class RetentionIn(Input):
    """The fields given change (null: back to the system default); the others stay.
    No period may pass the system's ceiling (`ceiling_days`)."""

    worklist_days: PeriodDays | None = None
    node_days: PeriodDays | None = None
    upload_days: PeriodDays | None = None
    warn_days: WarnDays | None = None


class RetentionOut(BaseModel):
    """The periods in force (ceiling applied), and which of them the institution set itself."""

    institution: str
    worklist_days: int
    node_days: int
    upload_days: int
    warn_days: int
    own: list[str]  # the settings the institution chose; the rest are the system's defaults
    default_days: int
    ceiling_days: int
    updated_at: datetime | None
    updated_by: str


class HoldIn(Input):
    """A study (`study_uid`) or a patient's studies (`patient_id`, with its issuer), kept from
    deletion until `until` (a date: the end of that day, UTC)."""

    study_uid: Uid | None = None
    patient_id: Text64 | None = None
    issuer_of_patient_id: Annotated[str, Field(max_length=64)] = ""
    reason: Annotated[str, Field(min_length=1, max_length=HOLD_REASON_MAX_CHARS)]
    until: datetime | date


class ReleaseIn(Input):
    """`{}`, or why the hold ends early (kept in the audit record)."""

    reason: Annotated[str, Field(max_length=HOLD_REASON_MAX_CHARS)] = ""


class HoldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    pk: int
    institution: str
    study_uid: str
    patient_id: str
    issuer_of_patient_id: str
    reason: str
    until: datetime
    created_at: datetime
    created_by: str
    released_at: datetime | None
    released_by: str
    live: bool


class HoldsQuery(Input):
    model_config = ConfigDict(extra="forbid", strict=False)

    all: bool = False  # released and ended holds too
