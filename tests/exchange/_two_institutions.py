"""A Ferry of two institutions, A and B, in process: the archive, a job worker on a clock moved
by hand, and a study A's PACS pushes onto B's worklist (tests of what a transfer's life tells
people: emails, statistics)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from archive.importer import import_paths
from archive.store import Archive
from dimse.context import BridgeContext
from exchange.notification_models import NotificationChoice
from exchange.notifications import Event, notify
from exchange.recipients import set_choice
from exchange.transfers import list_transfers, note_arrivals
from ferry.app import build_archive
from ferry.background import build_worker
from ferry.settings import Settings
from foundation.jobs import Worker
from policy.models import Node
from tests.conftest import make_settings
from tests.exchange._smtp import SmtpServer
from tests.factories import StudySpec, write_series
from tests.policy._people import add_institution, add_user

SECRET = StudySpec(
    patient_name="Secret^Patient", patient_id="PID-SECRET-77", accession_number="ACC-SECRET-77"
)


class Clock:
    """The worker's clock, moved by hand past backoff delays; never behind the real one."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.now = max(self.now, datetime.now(UTC))
        return self.now

    def advance(self, seconds: float) -> None:
        self.now = max(self.now, datetime.now(UTC)) + timedelta(seconds=seconds)


@dataclass
class Ferry:
    settings: Settings
    archive: Archive
    clock: Clock
    worker: Worker
    smtp: SmtpServer | None
    a: int
    b: int

    @property
    def engine(self) -> Any:
        return self.archive.engine

    def person(self, email: str, memberships: dict[int, str], choice: str | None = None) -> int:
        user_pk = add_user(self.engine, email, memberships=memberships)
        if choice is not None:
            set_choice(self.engine, user_pk, NotificationChoice(choice), self.clock())
        return user_pk

    def mail_to(self, email: str) -> list[Any]:
        assert self.smtp is not None
        return self.smtp.mailbox.to(email)

    def run(self) -> int:
        self.worker.run_ticks()
        return self.worker.run_until_idle()

    def notify(self, event: Event, **options: Any) -> int:
        with self.engine.begin() as connection:
            return notify(connection, event, now=self.clock(), **options)


def build_ferry(tmp_path: Path, database_url: str, smtp: SmtpServer | None, **values: Any) -> Ferry:
    mail = {"smtp_host": "127.0.0.1", "smtp_port": smtp.port} if smtp else {}
    defaults = {
        "dicom_port": 0,
        "smtp_starttls": False,
        "mail_from": "Ferry <ferry@ferry.test>",
        "forward_max_attempts": 1,
    }
    settings = make_settings(tmp_path, database_url, **(defaults | mail | values))
    archive = build_archive(settings)
    clock = Clock()
    worker = build_worker(BridgeContext(settings.dimse(), archive, clock), settings)
    a, b = add_institution(archive.engine, "A"), add_institution(archive.engine, "B")
    return Ferry(settings, archive, clock, worker, smtp, a, b)


def push_study(ferry: Ferry, tmp_path: Path, route_pk: int) -> int:
    """A's PACS pushed a study onto a route; returns the transfer's pk once it is settled."""
    write_series(tmp_path / "study", 2, spec=SECRET)
    import_paths(ferry.archive, [tmp_path / "study"], progress=False, institution_pk=ferry.a)
    note_arrivals(ferry.engine, route_pk, ferry.a, "PACS_A", {SECRET.study_uid: 2}, ferry.clock())
    ferry.clock.advance(31)
    ferry.run()
    [transfer] = list_transfers(ferry.engine)
    assert transfer.pk is not None
    return transfer.pk


def add_node(ferry: Ferry, ae_title: str, institution_pk: int, port: int = 104) -> int:
    with Session(ferry.engine) as session:
        node = Node(
            institution_pk=institution_pk,
            ae_title=ae_title,
            host="127.0.0.1",
            port=port,
            can_query=True,
            can_write=True,
        )
        session.add(node)
        session.commit()
        assert node.pk is not None
        return node.pk
