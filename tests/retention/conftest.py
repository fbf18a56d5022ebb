"""A Ferry with three institutions, a movable clock, an SMTP mailbox and the retention sweeper."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from archive.importer import import_paths
from archive.models import Study
from archive.store import Archive
from dimse.context import BridgeContext
from exchange.notification_models import NotificationChoice
from exchange.recipients import set_choice
from ferry.app import build_archive
from ferry.background import build_worker
from ferry.settings import Settings
from foundation.jobs import Worker
from retention.sweeper import Sweeper
from tests.conftest import make_settings
from tests.exchange._smtp import SmtpServer, smtp_server
from tests.factories import StudySpec, write_series
from tests.policy._people import add_institution, add_user


class Clock:
    """Retention's clock, set by the test: days after a study's arrival."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Place:
    settings: Settings
    archive: Archive
    clock: Clock
    sweeper: Sweeper
    worker: Worker
    smtp: SmtpServer
    a: int
    b: int
    c: int
    folder: Path

    @property
    def engine(self) -> Any:
        return self.archive.engine

    def person(self, email: str, memberships: dict[int, str], choice: str | None = None) -> int:
        user_pk = add_user(self.engine, email, memberships=memberships)
        if choice is not None:
            set_choice(self.engine, user_pk, NotificationChoice(choice), datetime.now(UTC))
        return user_pk

    def add_study(self, institution_pk: int, spec: StudySpec | None = None) -> tuple[str, datetime]:
        """A study of `institution_pk`, imported now; its UID and arrival time."""
        spec = spec or StudySpec()
        folder = self.folder / spec.study_uid
        write_series(folder, 2, spec=spec)
        import_paths(self.archive, [folder], progress=False, institution_pk=institution_pk)
        with Session(self.engine) as session:
            study = session.exec(
                select(Study).where(Study.study_instance_uid == spec.study_uid)
            ).one()
        arrived = study.created_at.replace(tzinfo=study.created_at.tzinfo or UTC)
        return spec.study_uid, arrived

    def at(self, moment: datetime, days: float) -> None:
        self.clock.now = moment + timedelta(days=days)

    def mail_to(self, email: str) -> list[Any]:
        self.worker.run_until_idle()
        return self.smtp.mailbox.to(email)


def build_place(tmp_path: Path, database_url: str, smtp: SmtpServer, **values: Any) -> Place:
    settings = make_settings(
        tmp_path,
        database_url,
        dicom_port=0,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_starttls=False,
        retention_pause_seconds=0,
        **values,
    )
    archive = build_archive(settings)
    clock = Clock()
    sweeper = Sweeper(archive, settings.retention(), clock)
    worker = build_worker(BridgeContext(settings.dimse(), archive, clock), settings)
    engine = archive.engine
    a, b, c = (add_institution(engine, code) for code in ("A", "B", "C"))
    return Place(settings, archive, clock, sweeper, worker, smtp, a, b, c, tmp_path / "in")


@pytest.fixture
def place(tmp_path: Path, database_url: str) -> Iterator[Place]:
    with smtp_server() as smtp:
        built = build_place(tmp_path, database_url, smtp)
        yield built
        built.archive.engine.dispose()
