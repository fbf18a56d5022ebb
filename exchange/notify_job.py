"""The notification job: one event's emails, recorded per recipient, then sent over SMTP.

The first run asks who hears of the event (`exchange.recipients`) and records one
`Notification` row per person, so that later runs send exactly those, and a retry after a
failure resends only what the SMTP server has not yet taken. Without an SMTP host the rows are
recorded and never sent. Each email sent is audited as Ferry's own action ("notify"), with the
event, the opaque subject and the recipient's account, and never a patient's data.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from audit.models import Outcome
from audit.trail import AuditRecord, record
from exchange.mail import compose, write_letter
from exchange.mail_sender import MailNotSent, MailSender
from exchange.notification_models import DEFAULT_CHOICE, MailStatus, Notification
from exchange.notification_models import NotificationPreference as Preference
from exchange.notifications import Event
from exchange.recipients import Recipient, find_recipients
from foundation.clock import Clock
from foundation.jobs import ClaimedJob, JobFailed
from policy.models import Institution
from policy.store import snapshot

ACTOR = "ferry"


@dataclass(frozen=True)
class Notifier:
    """What the job needs: the database, the SMTP sender (None: record only), Ferry's URL."""

    engine: Engine
    sender: MailSender | None
    base_url: str
    clock: Clock


def notify_handler(notifier: Notifier) -> Callable[[ClaimedJob], str]:
    def send_notifications(job: ClaimedJob) -> str:
        try:
            event = Event.of(job.payload)
        except (KeyError, ValueError, TypeError) as error:
            raise JobFailed(f"not a notification event: {error}", permanent=True) from None
        return _Run(notifier, job, event).run()

    return send_notifications


class _Run:
    def __init__(self, notifier: Notifier, job: ClaimedJob, event: Event) -> None:
        self.notifier = notifier
        self.engine = notifier.engine
        self.job = job
        self.event = event

    def run(self) -> str:
        rows = self._recorded() or self._record()
        if not rows:
            return f"{self.event.kind.value}: nobody to tell"
        pending = [row for row in rows if row.status == MailStatus.PENDING.value]
        if self.notifier.sender is None:
            return f"{self.event.kind.value}: {len(rows)} recorded, not sent (no SMTP host)"
        self._send(self.notifier.sender, pending)
        return f"{self.event.kind.value}: {len(rows)} sent"

    def _recorded(self) -> list[Notification]:
        with Session(self.engine) as session:
            query = select(Notification).where(Notification.job_pk == self.job.pk)
            return list(session.exec(query.order_by(col(Notification.pk))))

    def _record(self) -> list[Notification]:
        now = self.notifier.clock()
        recipients = find_recipients(self.engine, self.event, snapshot(self.engine), now)
        status = MailStatus.PENDING if self.notifier.sender else MailStatus.RECORDED
        try:
            with self.engine.begin() as connection:
                for recipient in recipients:
                    connection.execute(insert(Notification).values(**self._row(recipient, status)))
        except IntegrityError:  # a worker that lost its lease recorded them first
            pass
        return self._recorded()

    def _row(self, recipient: Recipient, status: MailStatus) -> dict[str, object]:
        return {
            "job_pk": self.job.pk,
            "event": self.event.kind.value,
            "institution_pk": self.event.institution_pk,
            "subject": str(self.event.subject),
            "user_pk": recipient.user_pk,
            "email": recipient.email,
            "status": status.value,
            "created_at": self.notifier.clock(),
        }

    def _send(self, sender: MailSender, pending: list[Notification]) -> None:
        if not pending:
            return
        labels, choices = self._labels(), self._choices(pending)
        sent = 0
        try:
            connection = sender.open()
            try:
                for row in pending:
                    letter = write_letter(
                        self.event, labels, self.notifier.base_url, choices.get(row.user_pk, "")
                    )
                    now = self.notifier.clock()
                    sender.send(connection, compose(letter, sender.config.sender, row.email, now))
                    self._sent(row, now)
                    sent += 1
            finally:
                sender.close(connection)
        except MailNotSent as error:
            message = f"{error} ({sent} of {len(pending)} sent this attempt)"
            self._audit(Outcome.FAILED, message, None)
            raise JobFailed(message) from None

    def _sent(self, row: Notification, now: datetime) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(Notification)
                .where(col(Notification.pk) == row.pk)
                .values(status=MailStatus.SENT.value, sent_at=now)
            )
        self._audit(Outcome.ALLOWED, f"emailed {self.event.kind.value}", row.user_pk)

    def _labels(self) -> dict[int, str]:
        wanted = {self.event.institution_pk, self.event.counterpart_pk or 0}
        with Session(self.engine) as session:
            rows = session.exec(select(Institution).where(col(Institution.pk).in_(wanted)))
            return {row.pk or 0: f"{row.name} ({row.code})" for row in rows}

    def _choices(self, rows: list[Notification]) -> dict[int, str]:
        with Session(self.engine) as session:
            query = select(Preference).where(col(Preference.user_pk).in_([r.user_pk for r in rows]))
            found = {row.user_pk: row.choice for row in session.exec(query)}
        return {row.user_pk: found.get(row.user_pk, DEFAULT_CHOICE.value) for row in rows}

    def _audit(self, outcome: Outcome, reason: str, user_pk: int | None) -> None:
        record(
            self.engine,
            AuditRecord(
                action="notify",
                outcome=outcome,
                actor=ACTOR,
                actor_kind="system",
                institution_pk=self.event.institution_pk,
                reason=reason,
                detail={
                    "event": self.event.kind.value,
                    "subject": str(self.event.subject),
                    "priority": self.event.priority.value,
                    "user_pk": user_pk,
                    "job_pk": self.job.pk,
                    "attempt": self.job.attempts,
                },
            ),
        )


def list_notifications(
    engine: Engine,
    institution_pks: Collection[int] | None = None,
    status: MailStatus | None = None,
    limit: int = 200,
) -> list[Notification]:
    """The record, newest first; with institutions, the emails about them (all when None)."""
    query = select(Notification).order_by(col(Notification.pk).desc()).limit(limit)
    if institution_pks is not None:
        query = query.where(col(Notification.institution_pk).in_(list(institution_pks)))
    if status is not None:
        query = query.where(Notification.status == status.value)
    with Session(engine) as session:
        rows = list(session.exec(query))
        for row in rows:
            session.expunge(row)
    return rows
