"""Requests for imaging: one institution asks another for a patient's studies, and the answer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from exchange.models import new_public_id

DETAILS_MAX_CHARS = 4000  # what is wanted, in words ("all priors for ...")
REASON_MAX_CHARS = 1024


class RequestStatus(StrEnum):
    OPEN = "open"  # waiting for the asked institution
    IN_PROGRESS = "in-progress"  # someone there is searching for it
    ANSWERED = "answered"  # every study picked was sent
    PARTLY_ANSWERED = "partly-answered"  # some picked studies could not be fetched or sent
    REJECTED = "rejected"  # the asked institution said no, with a reason
    NOTHING_FOUND = "nothing-found"
    CANCELLED = "cancelled"  # withdrawn by the requester
    EXPIRED = "expired"  # nobody answered within FERRY_REQUEST_EXPIRY_DAYS


PENDING = frozenset({RequestStatus.OPEN, RequestStatus.IN_PROGRESS})


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


class ImagingRequest(SQLModel, table=True):
    __tablename__ = "imaging_request"
    __table_args__ = (Index("ix_imaging_request_asked_status", "asked_institution_pk", "status"),)

    pk: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(default_factory=new_public_id, max_length=32, unique=True, index=True)
    requesting_institution_pk: int = Field(foreign_key="institution.pk", index=True)
    asked_institution_pk: int = Field(foreign_key="institution.pk", index=True)
    destination_node_pk: int | None = Field(default=None, foreign_key="node.pk")  # None: worklist
    status: str = Field(default=RequestStatus.OPEN.value, max_length=32)
    status_reason: str = Field(default="", max_length=REASON_MAX_CHARS)
    urgency: str = Field(default=Urgency.ROUTINE.value, max_length=16)
    # the patient, as the requester knows them
    patient_id: str = Field(default="", max_length=64, index=True)
    issuer_of_patient_id: str = Field(default="", max_length=64)
    patient_name: str = Field(default="", max_length=324)
    patient_birth_date: str = Field(default="", max_length=8)
    patient_sex: str = Field(default="", max_length=16)
    # what is wanted
    accession_numbers: str = Field(default="", max_length=1024)  # backslash-separated
    study_date_from: str = Field(default="", max_length=8)
    study_date_to: str = Field(default="", max_length=8)
    modalities: str = Field(default="", max_length=128)  # backslash-separated
    body_part: str = Field(default="", max_length=64)
    details: str = Field(default="", max_length=DETAILS_MAX_CHARS)
    clinical_reason: str = Field(default="", max_length=REASON_MAX_CHARS)
    created_by: str = Field(default="", max_length=256)
    created_by_user_pk: int | None = Field(default=None)
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None = Field(default=None)


class RequestAnswer(SQLModel, table=True):
    """A transfer that answered a request (one per answer)."""

    __tablename__ = "request_answer"
    __table_args__ = (UniqueConstraint("request_pk", "transfer_pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    request_pk: int = Field(foreign_key="imaging_request.pk", index=True)
    transfer_pk: int = Field(foreign_key="transfer.pk", index=True)


class RequestEvent(SQLModel, table=True):
    """One change of a request's state: when, by whom, to what, and why."""

    __tablename__ = "request_event"

    pk: int | None = Field(default=None, primary_key=True)
    request_pk: int = Field(foreign_key="imaging_request.pk", index=True)
    at: datetime
    actor: str = Field(max_length=256)
    status: str = Field(max_length=32)
    reason: str = Field(default="", max_length=REASON_MAX_CHARS)
