"""Transfers: a study going from one institution to another's worklist or one of its nodes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel


class TransferStatus(StrEnum):
    COLLECTING = "collecting"  # instances still arriving (direct push waits for quiet time)
    REFUSED = "refused"  # no destination rule lets the sender send there now
    ON_WORKLIST = "on-worklist"  # granted to the destination institution; people take it from there
    DELIVERING = "delivering"  # a forwarding job is queued or running
    DELIVERED = "delivered"
    PARTIAL = "partial"  # some instances were refused by the node
    FAILED = "failed"  # the forwarding job was parked
    NEEDS_RECONCILIATION = "needs-reconciliation"  # no worklist match: a person decides


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
