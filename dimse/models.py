"""Per-instance results of forwarding jobs: what a node took; a resumed job sends the rest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


class ForwardedInstance(SQLModel, table=True):
    __tablename__ = "forwarded_instance"
    __table_args__ = (UniqueConstraint("job_pk", "sop_instance_uid"),)

    pk: int | None = Field(default=None, primary_key=True)
    job_pk: int = Field(index=True)
    sop_instance_uid: str = Field(max_length=64)
    status: int  # the DIMSE status the node answered; -1: no answer (association lost)
    sent_at: datetime
