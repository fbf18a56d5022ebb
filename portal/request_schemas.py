"""Request and response bodies of the requests API (OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from exchange.request_models import DETAILS_MAX_CHARS
from exchange.request_search import Candidate
from portal.api_schemas import Code, Input, Uid
from portal.transfer_schemas import AeTitle, ChangeOut, PriorityName, Reason, StudyFactsOut

DicomDate = Annotated[str, Field(pattern=r"^(\d{8})?$", description="YYYYMMDD")]
Short = Annotated[str, Field(max_length=64)]


class PatientIn(Input):
    """Who the request is about: a Patient ID (and its issuer), or a name with a birth date."""

    id: Short = ""
    issuer: Short = ""
    name: Annotated[str, Field(max_length=324, description="DICOM PN: Family^Given")] = ""
    birth_date: DicomDate = ""
    sex: Literal["", "M", "F", "O"] = ""


class RequestIn(Input):
    """A request from `institution` (yours) to `asked`; the answer goes to your worklist, or
    to your `node`."""

    institution: Code
    asked: Code
    node: AeTitle | None = None
    patient: PatientIn
    accession_numbers: list[Short] = Field(default_factory=list, max_length=20)
    study_date_from: DicomDate = ""
    study_date_to: DicomDate = ""
    modalities: list[Annotated[str, Field(pattern=r"^[A-Z]{2,8}$")]] = Field(
        default_factory=list, max_length=10
    )
    body_part: Annotated[str, Field(max_length=64)] = ""
    details: Annotated[
        str, Field(max_length=DETAILS_MAX_CHARS, description="what is wanted, in words")
    ] = ""
    reason: Reason = ""
    urgency: PriorityName = "routine"


class PickIn(Input):
    study_uid: Uid
    node: AeTitle | None = Field(default=None, description="where it is; absent: in Ferry")


class AnswerIn(Input):
    studies: list[PickIn] = Field(min_length=1, max_length=200)


class RejectIn(Input):
    reason: Annotated[str, Field(min_length=1, max_length=1024)]


class ReasonIn(Input):
    reason: Reason = ""


class SearchIn(Input):
    node: AeTitle | None = Field(default=None, description="a node of yours; absent: Ferry")


class PatientOut(BaseModel):
    id: str
    issuer: str
    name: str
    birth_date: str
    sex: str


class RequestOut(BaseModel):
    id: str
    status: str
    status_reason: str
    urgency: str
    institution: str  # asking
    asked: str
    node: str | None
    patient: PatientOut
    accession_numbers: list[str]
    study_date_from: str
    study_date_to: str
    modalities: list[str]
    body_part: str
    details: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    side: str  # requester or answerer: how the caller is a party to it
    answers: list[str] = []  # the opaque ids of the transfers that answered it
    history: list[ChangeOut] = []


class RequestQuery(Input):
    model_config = ConfigDict(extra="forbid", strict=False)

    direction: Literal["incoming", "outgoing", "all"] = "all"
    institution: Code | None = None
    status: Annotated[str, Field(max_length=200, description="comma-separated states")] = ""
    urgency: PriorityName | None = None
    patient_id: Short | None = None
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class RequestListOut(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[RequestOut]


class CandidateOut(StudyFactsOut):
    source: str  # "archive" or the node's AE title

    @classmethod
    def of(cls, candidate: Candidate) -> CandidateOut:
        return cls(**{**candidate.__dict__, "modalities": list(candidate.modalities)})


class SearchOut(BaseModel):
    source: str
    query: list[dict[str, str]]  # the matching keys sent, one set per accession number
    matches: list[CandidateOut]
