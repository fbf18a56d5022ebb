"""Notification tables: each person's choice of emails, and the record of every email."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


class NotificationChoice(StrEnum):
    """Which emails a person gets about the transactions of their institutions."""

    ALL = "all"  # every transaction of their institutions they may see
    OWN = "own"  # only what they did, or what is addressed to them
    FAILURES = "failures"  # only what went wrong
    NONE = "none"


DEFAULT_CHOICE = NotificationChoice.OWN


class NotificationPreference(SQLModel, table=True):
    """A person's choice; without a row, DEFAULT_CHOICE."""

    __tablename__ = "notification_preference"

    user_pk: int = Field(primary_key=True, foreign_key="ferry_user.pk")
    choice: str = Field(default=DEFAULT_CHOICE.value, max_length=16)
    updated_at: datetime


class MailStatus(StrEnum):
    PENDING = "pending"  # to be sent by the job that recorded it
    SENT = "sent"  # the SMTP server accepted it
    RECORDED = "recorded"  # no SMTP host configured: kept here, never sent


class Notification(SQLModel, table=True):
    """One email of one event to one person, recorded before it is sent (its job's outbox)."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("job_pk", "user_pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    job_pk: int = Field(index=True)
    event: str = Field(max_length=32)
    institution_pk: int | None = Field(default=None, foreign_key="institution.pk", index=True)
    subject: str = Field(default="", max_length=64)  # opaque: "transfer:12"
    user_pk: int = Field(foreign_key="ferry_user.pk", index=True)
    email: str = Field(max_length=320)
    status: str = Field(default=MailStatus.PENDING.value, max_length=16)
    created_at: datetime
    sent_at: datetime | None = Field(default=None)
