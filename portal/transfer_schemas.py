"""Request and response bodies of the transfers, worklist and destinations API (OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from exchange.models import NOTE_MAX_CHARS
from portal.api_schemas import Code, Input, Uid

AeTitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[ -~]*[!-~][ -~]*$")]
Reason = Annotated[str, Field(max_length=1024)]
PriorityName = Literal["routine", "urgent"]


class ReportIn(Input):
    title: Annotated[str, Field(max_length=256)] = ""
    text: Annotated[str, Field(min_length=1, max_length=16000)]


class TransferIn(Input):
    """A transfer from `institution` (yours) to `destination`'s worklist, or to its `node`."""

    institution: Code
    destination: Code
    node: AeTitle | None = None
    studies: list[Uid] = Field(default_factory=list, max_length=500)
    priority: PriorityName = "routine"
    note: Annotated[str, Field(max_length=NOTE_MAX_CHARS)] = ""
    reports: list[ReportIn] = Field(default_factory=list, max_length=10)
    send: bool = Field(default=False, description="send at once instead of keeping a draft")
    profile: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None,
        description="a pseudonymisation profile of `institution`: the destination gets "
        "pseudonymised copies of the studies, never the studies (made by a job; with `send`, "
        "sent once every copy is in)",
    )


class ReasonIn(Input):
    reason: Reason = ""


class MarkDeliveredIn(Input):
    """How the person knows the studies reached the destination (required: 400 when blank)."""

    reason: Reason = ""


class ReturnIn(Input):
    reason: Annotated[str, Field(min_length=1, max_length=1024)]


class DeliverIn(Input):
    node: AeTitle
    studies: list[Uid] = Field(default_factory=list, max_length=500)  # default: all of them


class ViewerLinkIn(Input):
    study: Uid | None = None  # the transfer's first study when absent


class ViewerLinkOut(BaseModel):
    url: str
    study: str
    expires_in: int


class StudyFactsOut(BaseModel):
    """A study as the person choosing or receiving it compares it: whose, what, when."""

    study_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_date: str
    study_description: str
    modalities: list[str]


class StudyOut(StudyFactsOut):
    in_archive: bool


class ChangeOut(BaseModel):
    at: datetime
    actor: str
    status: str
    reason: str


class ReportOut(BaseModel):
    title: str
    text: str


class TransferOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: str
    reason: str
    origin: str
    priority: str
    note: str
    sender: str
    destination: str
    node: str | None
    created_by: str
    created_at: datetime
    sent_at: datetime | None
    completed_at: datetime | None
    done_at: datetime | None
    side: str  # sender or receiver: how the caller is a party to it
    pseudonymised_with: str | None = None  # the profile its studies were copied with
    studies: list[StudyOut]
    reports: list[ReportOut] = []
    history: list[ChangeOut] = []
    # To the receiver (worklist, one transfer): when its retention period ends, or held (by a
    # hold of any institution that holds the studies, the owner's included): then no countdown.
    retention_days_left: int | None = None
    retention_due_at: datetime | None = None
    retention_held: bool = False


class TransferQuery(Input):
    model_config = ConfigDict(extra="forbid", strict=False)

    institution: Code | None = None
    status: Annotated[str, Field(max_length=32)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class WorklistQueryIn(Input):
    model_config = ConfigDict(extra="forbid", strict=False)

    institution: Code
    status: Annotated[str, Field(max_length=200, description="comma-separated states")] = ""
    sender: Code | None = None
    priority: PriorityName | None = None
    patient_id: Annotated[str, Field(max_length=64)] | None = None
    patient_name: Annotated[str, Field(max_length=64, description="a prefix")] | None = None
    accession: Annotated[str, Field(max_length=64)] | None = None
    modality: Annotated[str, Field(max_length=16)] | None = None
    study_date_from: Annotated[str, Field(pattern=r"^\d{8}$")] | None = None
    study_date_to: Annotated[str, Field(pattern=r"^\d{8}$")] | None = None
    arrived_from: datetime | None = None
    arrived_to: datetime | None = None
    include_done: bool = True
    sort: Literal["arrival", "priority", "status", "created"] = "arrival"
    order: Literal["asc", "desc"] = "desc"
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class WorklistOut(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[TransferOut]


class DestinationsQuery(Input):
    model_config = ConfigDict(extra="forbid", strict=False)

    institution: Code


class DestinationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    institution: str
    node: str | None
    allowed: bool
    reason: str
    rule: str
    goes_to: str | None  # where an allowed send goes now: "worklist" or a node's AE title
    pseudonymised_only: bool = False  # allowed for pseudonymised copies only (a profile)


class DestinationsOut(BaseModel):
    institution: str
    at: datetime
    allowed: list[DestinationOut]
    left_out: list[DestinationOut]


class NodeSearchIn(Input):
    """Study-level C-FIND on one of `institution`'s nodes: matching keys by DICOM keyword
    (PatientID, PatientName, PatientBirthDate, AccessionNumber, StudyDate, ModalitiesInStudy,
    StudyInstanceUID, StudyDescription), with the usual wildcards and date ranges."""

    institution: Code
    node: AeTitle
    keys: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=64)]] = Field(
        max_length=8
    )


class NodeStudiesIn(Input):
    """Studies on one of the sender's nodes, fetched into the draft by a job."""

    node: AeTitle
    studies: list[Uid] = Field(min_length=1, max_length=500)
    send: bool = Field(default=False, description="send the transfer once every study is in")
