"""Transfers: a study going from one institution to another's worklist or one of its nodes."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

NOTE_MAX_CHARS = 4000


def new_public_id() -> str:
    """The opaque id a transfer is known by outside the database (URLs, audit transactions)."""
    # Hexadecimal: 32 characters, 128 bits. Never begins with "-" (a URL-safe base64 id did one
    # time in 64, and a command line then read it as an option) and reads the same in any case.
    return secrets.token_hex(16)


class TransferStatus(StrEnum):
    COLLECTING = "collecting"  # instances still arriving (direct push waits for quiet time)
    REFUSED = "refused"  # no destination rule lets the sender send there now
    ON_WORKLIST = "on-worklist"  # granted to the destination institution; people take it from there
    DELIVERING = "delivering"  # a forwarding job is queued or running
    DELIVERED = "delivered"
    PARTIAL = "partial"  # some instances were refused by the node
    FAILED = "failed"  # the forwarding job was parked
    NEEDS_RECONCILIATION = "needs-reconciliation"  # no worklist match: a person decides
    # Transfers made by people and tools (exchange.sending):
    DRAFT = "draft"  # being put together (studies picked or uploaded); nobody else sees it
    SENT = "sent"  # decided and on its way (a moment, before on-worklist or delivering)
    VIEWED = "viewed"  # the receiver opened it in the viewer
    DOWNLOADED = "downloaded"  # the receiver downloaded it (a ZIP, or to one of its nodes)
    CANCELLED = "cancelled"  # withdrawn by the sender before anyone downloaded it
    RETURNED = "returned"  # sent back by the receiver, with a reason
    EXPIRED = "expired"  # the receiver's retention period ended: the grants it gave are gone
    DELETED = "deleted"  # none of its studies is left in the archive


# How a transfer ends under retention (exchange.transfer_endings).
ENDED_BY_RETENTION = frozenset({TransferStatus.EXPIRED, TransferStatus.DELETED})
# Where a transfer stands when nobody at the receiver has taken it yet: ending from there, it
# ran out unused (a download or a delivery to a node is a transfer that did its work). Its
# sender is told (`transfer-expired`) and the statistics count it as a failure.
UNTAKEN = frozenset({TransferStatus.SENT, TransferStatus.ON_WORKLIST, TransferStatus.VIEWED})


class Priority(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


class Origin(StrEnum):
    PUSH = "push"  # a node pushed to a route's called AE title (direct push)
    PERSON = "person"  # a person or an API client, through the portal, the API or the CLI


# The jobs that fill a person's draft (from a PACS node; with pseudonymised copies): while one
# is queued or running, the draft is not sent by hand.
FETCH_FOR_TRANSFER = "exchange.transfer-fetch"
PSEUDONYMISE_FOR_TRANSFER = "exchange.transfer-pseudonymise"
DRAFT_FILLING_JOBS = (FETCH_FOR_TRANSFER, PSEUDONYMISE_FOR_TRANSFER)


class Transfer(SQLModel, table=True):
    __tablename__ = "transfer"
    __table_args__ = (
        Index("ix_transfer_status_last", "status", "last_instance_at"),
        # One collecting transfer per route and study, however many associations deliver it.
        Index(
            "uq_transfer_collecting",
            "route_pk",
            "study_instance_uid",
            unique=True,
            sqlite_where=text("status = 'collecting'"),
            postgresql_where=text("status = 'collecting'"),
        ),
    )

    pk: int | None = Field(default=None, primary_key=True)
    study_instance_uid: str = Field(max_length=64, index=True)
    sender_institution_pk: int = Field(foreign_key="institution.pk", index=True)
    destination_institution_pk: int = Field(foreign_key="institution.pk", index=True)
    destination_node_pk: int | None = Field(default=None, foreign_key="node.pk")
    route_pk: int | None = Field(default=None, foreign_key="dimse_route.pk")
    calling_ae_title: str = Field(default="", max_length=16)
    status: str = Field(default=TransferStatus.COLLECTING.value, max_length=32)
    reason: str = Field(default="", max_length=1024)
    instances: int = Field(default=0)
    job_pk: int | None = Field(default=None)
    created_at: datetime
    last_instance_at: datetime
    completed_at: datetime | None = Field(default=None)
    # Opaque id for URLs and audit (never the pk); a Core insert gets one from the column default.
    public_id: str = Field(default_factory=new_public_id, max_length=32, unique=True, index=True)
    origin: str = Field(default=Origin.PUSH.value, max_length=16)
    priority: str = Field(default=Priority.ROUTINE.value, max_length=16)
    note: str = Field(default="", max_length=NOTE_MAX_CHARS)
    created_by: str = Field(default="", max_length=256)
    sent_at: datetime | None = Field(default=None)  # arrival on the receiver's side
    done_at: datetime | None = Field(default=None)  # marked done on the receiver's worklist
    # Its (first) study's Patient ID and accession number, written when the study leaves the
    # archive (`exchange.transfer_facts`): the oversight still names and finds them after.
    patient_id: str = Field(default="", max_length=64)
    accession_number: str = Field(default="", max_length=64)
    # Where it stood when it ended (`expired` or `deleted`, exchange.transfer_endings): the
    # statistics count a failed transfer as failed after its studies are gone, and tell one
    # that ran out unused.
    ended_from: str | None = Field(default=None, max_length=32)
    # The profile its studies were copied with (`exchange.pseudonymisation`): the receiver
    # holds pseudonymised copies, never the originals. None: the studies themselves.
    pseudonymised_with: str | None = Field(default=None, max_length=64)


class TransferStudy(SQLModel, table=True):
    """A study of a transfer made by people (a pushed transfer has its one study on the row)."""

    __tablename__ = "transfer_study"
    __table_args__ = (UniqueConstraint("transfer_pk", "study_instance_uid"),)

    pk: int | None = Field(default=None, primary_key=True)
    transfer_pk: int = Field(foreign_key="transfer.pk", index=True)
    study_instance_uid: str = Field(max_length=64, index=True)
    job_pk: int | None = Field(default=None)  # its forwarding job, for a node destination
    # The study's Patient ID and accession number, kept when it leaves the archive (as above).
    patient_id: str = Field(default="", max_length=64)
    accession_number: str = Field(default="", max_length=64)


class TransferReport(SQLModel, table=True):
    """A report sent along with a transfer (plain text, as the sender wrote or pasted it)."""

    __tablename__ = "transfer_report"

    pk: int | None = Field(default=None, primary_key=True)
    transfer_pk: int = Field(foreign_key="transfer.pk", index=True)
    title: str = Field(default="", max_length=256)
    text: str = Field(default="", max_length=16000)


class TransferEvent(SQLModel, table=True):
    """One change of a transfer's state: when, by whom, to what, and why."""

    __tablename__ = "transfer_event"

    pk: int | None = Field(default=None, primary_key=True)
    transfer_pk: int = Field(foreign_key="transfer.pk", index=True)
    at: datetime
    actor: str = Field(max_length=256)
    status: str = Field(max_length=32)
    reason: str = Field(default="", max_length=1024)


class PseudonymisationProfile(SQLModel, table=True):
    """An institution's recipe for research and teaching copies (`archive.pseudonymise`).

    `rules` is JSON: `{"keep": [keyword...], "remove": [...], "replace": {keyword: value}}`;
    `secret` keys the pseudonyms (hex, never shown): the same patient, study or date gets the
    same pseudonym in every copy made with this profile.
    """

    __tablename__ = "pseudonymisation_profile"
    __table_args__ = (
        UniqueConstraint("institution_pk", "name", name="uq_pseudonymisation_profile_name"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    institution_pk: int = Field(foreign_key="institution.pk")
    name: str = Field(max_length=64)
    description: str = Field(default="", max_length=500)
    rules: str = Field(default="{}")
    dates: str = Field(default="remove", max_length=16)
    private_tags: str = Field(default="remove", max_length=16)
    secret: str = Field(default_factory=lambda: secrets.token_hex(32), max_length=64)
    created_at: datetime
    created_by: str = Field(default="", max_length=256)
