"""Retention tables: each institution's periods, holds that freeze studies, warnings sent.

The retention sweeper (`retention/`) reads them to decide what is due; the admin API and the
worklist read them too, which is why they live with the exchange's workflows and not in the
sweeper's own package (edges never import each other).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

HOLD_REASON_MAX_CHARS = 1024


class HoldingKind(StrEnum):
    """How an institution holds a study; each kind has its own period."""

    WORKLIST = "worklist"  # received by a transfer onto its worklist (a grant)
    NODE = "node"  # received by a transfer delivered to one of its nodes (a grant)
    UPLOAD = "upload"  # its own study: uploaded, imported or pushed by its nodes


class RetentionPolicy(SQLModel, table=True):
    """An institution's periods in days; a column left empty takes the system default."""

    __tablename__ = "retention_policy"

    institution_pk: int = Field(primary_key=True, foreign_key="institution.pk")
    worklist_days: int | None = Field(default=None)
    node_days: int | None = Field(default=None)
    upload_days: int | None = Field(default=None)
    warn_days: int | None = Field(default=None)
    updated_at: datetime
    updated_by: str = Field(default="", max_length=256)


class RetentionHold(SQLModel, table=True):
    """A legal or clinical hold: a study, or a patient's studies, are not deleted until `until`.

    Placed for one institution, it covers the studies that institution holds (owns, or holds a
    live grant on). Released early by an administrator; never deleted (the record stays).
    """

    __tablename__ = "retention_hold"
    __table_args__ = (Index("ix_retention_hold_patient", "patient_id", "issuer_of_patient_id"),)

    pk: int | None = Field(default=None, primary_key=True)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)
    study_instance_uid: str = Field(default="", max_length=64, index=True)  # "": a patient hold
    patient_id: str = Field(default="", max_length=64)
    issuer_of_patient_id: str = Field(default="", max_length=64)
    reason: str = Field(max_length=HOLD_REASON_MAX_CHARS)
    until: datetime
    created_at: datetime
    created_by: str = Field(default="", max_length=256)
    released_at: datetime | None = Field(default=None)
    released_by: str = Field(default="", max_length=256)


class RetentionWarning(SQLModel, table=True):
    """A warning queued for one holding's deadline: each deadline is announced once."""

    __tablename__ = "retention_warning"
    __table_args__ = (UniqueConstraint("study_instance_uid", "institution_pk", "due_at"),)

    pk: int | None = Field(default=None, primary_key=True)
    study_instance_uid: str = Field(max_length=64)
    institution_pk: int = Field(foreign_key="institution.pk")
    due_at: datetime
    warned_at: datetime


class RetentionSweepLock(SQLModel, table=True):
    """One row: who sweeps now (`host:pid:token`) and until when, where no advisory lock exists."""

    __tablename__ = "retention_sweep_lock"

    pk: int = Field(default=1, primary_key=True)
    holder: str = Field(default="", max_length=256)
    locked_until: datetime | None = Field(default=None)
