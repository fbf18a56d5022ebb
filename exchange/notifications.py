"""Notifications: the events Ferry tells people about, who hears of each, and queuing them.

A producer calls `notify(connection, event, now=...)` inside the transaction that made the
change (a transfer settled, a registration decided), so that the email is an outbox job written
with the change or not at all. The job (`exchange.notify_job`) later works out the recipients and
sends one email each. Who hears of an event is two questions:

- may they, at all: the policy engine is asked whether each member of the event's institution
  may do the event's `Audience.action` for it (SEARCH for transfers and expiring studies,
  ADMINISTER for registrations waiting, ANSWER and REQUEST for requests); events about one
  person (a registration decided) go to that person alone;
- do they want it: their `NotificationChoice` (`hears`): "all", "own" (they did it, or it is
  addressed to them), "failures", or "none".

Events carry no patient data, only opaque references (`Subject`): emails cross the internet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlmodel import Session

from exchange.notification_models import NotificationChoice
from foundation.jobs import DEFAULT_MAX_ATTEMPTS, enqueue
from policy.roles import Action

NOTIFY = "notify"  # the job kind


class EventKind(StrEnum):
    TRANSFER_ARRIVED = "transfer-arrived"  # to the receiving institution
    TRANSFER_DELIVERED = "transfer-delivered"  # to the sending institution
    TRANSFER_PARTLY_DELIVERED = "transfer-partly-delivered"
    TRANSFER_FAILED = "transfer-failed"
    TRANSFER_EXPIRED = "transfer-expired"  # to the sending institution: nobody took it in time
    TRANSFER_NOT_SENT = "transfer-not-sent"  # to the sender: studies picked on its PACS not in
    REQUEST_RECEIVED = "request-received"  # to the institution asked
    REQUEST_ANSWERED = "request-answered"  # to the requesting institution (and requester)
    REQUEST_REJECTED = "request-rejected"
    ANSWER_NOT_SENT = "answer-not-sent"  # to the institution asked: its PACS gave nothing
    REGISTRATION_WAITING = "registration-waiting"  # to the institution's administrators
    REGISTRATION_APPROVED = "registration-approved"  # to the person who registered
    REGISTRATION_REJECTED = "registration-rejected"
    STUDY_EXPIRING = "study-expiring"  # to the owning institution, before retention deletes


class Priority(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


@dataclass(frozen=True)
class Audience:
    """Who may hear of an event kind, and whether it counts as a failure."""

    action: Action | None  # asked of each member; None: the event's person alone
    failure: bool = False
    addressed: bool = False  # every member allowed counts it as their own (work waits on them)


AUDIENCES: Mapping[EventKind, Audience] = {
    EventKind.TRANSFER_ARRIVED: Audience(Action.SEARCH),
    EventKind.TRANSFER_DELIVERED: Audience(Action.SEARCH),
    EventKind.TRANSFER_PARTLY_DELIVERED: Audience(Action.SEARCH, failure=True),
    EventKind.TRANSFER_FAILED: Audience(Action.SEARCH, failure=True),
    EventKind.TRANSFER_EXPIRED: Audience(Action.SEARCH, failure=True),
    EventKind.TRANSFER_NOT_SENT: Audience(Action.TRANSFER, failure=True),
    EventKind.REQUEST_RECEIVED: Audience(Action.ANSWER, addressed=True),
    EventKind.REQUEST_ANSWERED: Audience(Action.REQUEST),
    EventKind.REQUEST_REJECTED: Audience(Action.REQUEST, failure=True),
    EventKind.ANSWER_NOT_SENT: Audience(Action.ANSWER, failure=True),
    EventKind.REGISTRATION_WAITING: Audience(Action.ADMINISTER, addressed=True),
    EventKind.REGISTRATION_APPROVED: Audience(None),
    EventKind.REGISTRATION_REJECTED: Audience(None, failure=True),
    EventKind.STUDY_EXPIRING: Audience(Action.SEARCH),
}


@dataclass(frozen=True)
class Subject:
    """What an event is about, by opaque reference: `transfer:12`, `registration:3`."""

    kind: str  # transfer, request, registration, study
    pk: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.pk}"

    @classmethod
    def parse(cls, text: str) -> Subject:
        kind, _, pk = text.partition(":")
        return cls(kind, int(pk))


@dataclass(frozen=True)
class Event:
    kind: EventKind
    institution_pk: int  # whose people hear of it
    subject: Subject
    priority: Priority = Priority.ROUTINE
    actor_user_pk: int | None = None  # the person who did it, if a person did
    person_user_pk: int | None = None  # the person it is about (who registered, who asked)
    counterpart_pk: int | None = None  # the other institution (sender of an arrival, ...)

    @property
    def audience(self) -> Audience:
        return AUDIENCES[self.kind]

    def payload(self) -> dict[str, Any]:
        return {
            "event": self.kind.value,
            "institution_pk": self.institution_pk,
            "subject": str(self.subject),
            "priority": self.priority.value,
            "actor_user_pk": self.actor_user_pk,
            "person_user_pk": self.person_user_pk,
            "counterpart_pk": self.counterpart_pk,
        }

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> Event:
        return cls(
            EventKind(payload["event"]),
            int(payload["institution_pk"]),
            Subject.parse(str(payload["subject"])),
            Priority(payload.get("priority") or Priority.ROUTINE.value),
            _optional_int(payload.get("actor_user_pk")),
            _optional_int(payload.get("person_user_pk")),
            _optional_int(payload.get("counterpart_pk")),
        )

    def concerns(self, user_pk: int) -> bool:
        """Whether it is the person's own: they did it, or it is about them."""
        return user_pk in (self.actor_user_pk, self.person_user_pk)


def _optional_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def hears(choice: NotificationChoice, *, own: bool, failure: bool) -> bool:
    """Whether a person who may hear of an event wants an email about it."""
    if choice is NotificationChoice.ALL:
        return True
    if choice is NotificationChoice.OWN:
        return own
    if choice is NotificationChoice.FAILURES:
        return failure
    return False


def notify(
    connection: Connection,
    event: Event,
    *,
    now: datetime,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Queue the event's emails inside the caller's transaction; returns the job's pk."""
    return enqueue(connection, NOTIFY, event.payload(), now=now, max_attempts=max_attempts)


class _Registration(Protocol):
    pk: int | None
    user_pk: int
    institution_pk: int


def on_registration(
    kind: EventKind, now: datetime, actor_user_pk: int | None = None
) -> Callable[[Session, _Registration], None]:
    """For `policy.store.register(..., then=...)` and the decisions: queue the event's emails
    in the transaction that creates or decides the registration."""

    def then(session: Session, registration: _Registration) -> None:
        assert registration.pk is not None
        event = Event(
            kind,
            registration.institution_pk,
            Subject("registration", registration.pk),
            actor_user_pk=actor_user_pk,
            person_user_pk=registration.user_pk,
        )
        notify(session.connection(), event, now=now)

    return then
