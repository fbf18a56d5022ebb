"""The retention sweeper: warns, removes expired grants, deletes studies whose time is up.

One sweep at a time across processes and hosts (`retention.lock`). Studies are read in
batches; each deletion goes through the archive's one delete path (`Archive.delete`: index
rows, grants, blobs, frame caches), after its audit event is written, so a sweeper killed
mid-batch leaves each study either whole or gone, and the next run carries on. Between batches
the sweeper pauses (`pause_seconds`) so that deleting never starves the service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from archive.models import StudyGrant
from archive.store import Archive
from audit.models import Outcome
from audit.trail import AuditRecord, record
from exchange.holds import live_holds
from exchange.notifications import Event, EventKind, Subject, notify
from exchange.report_retention import remove_orphaned_reports
from exchange.retention_models import RetentionWarning
from exchange.retention_terms import Terms, read_terms, terms_of
from exchange.transfer_endings import RETENTION_ACTOR, note_grant_removed, note_study_deleted
from exchange.transfer_facts import remember_transfer_facts
from foundation import metrics
from foundation.clock import Clock
from foundation.errors import StudyNotFound
from retention.config import RetentionConfig
from retention.holdings import iter_study_holdings
from retention.lock import SweepLock, sweep_lock
from retention.rules import Due, Fate, HoldFacts, StudyHoldings, decide_fate

log = logging.getLogger(__name__)

ACTOR = RETENTION_ACTOR
REASON = "retention"


@dataclass
class SweepReport:
    """What one run did (or, for a plan, would do)."""

    ran: bool = True  # False: another sweep held the lock
    studies_deleted: list[str] = field(default_factory=list)
    grants_removed: int = 0
    warnings_queued: int = 0
    held: int = 0

    def describe(self) -> str:
        if not self.ran:
            return "another retention sweep is running; nothing done"
        return (
            f"{len(self.studies_deleted)} studies deleted, {self.grants_removed} grants removed, "
            f"{self.warnings_queued} warnings queued, {self.held} studies held"
        )


class Sweeper:
    def __init__(
        self,
        archive: Archive,
        config: RetentionConfig,
        clock: Clock,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.archive = archive
        self.engine = archive.engine
        self.config = config
        self.clock = clock
        self.sleep = sleep

    # -- planning (pure rules over what is read) -------------------------------------------

    def iter_fates(self, now: datetime, institution_pk: int | None = None) -> Iterator[list[Fate]]:
        terms = read_terms(self.engine, self.config.defaults)
        default = terms_of(None, self.config.defaults)
        batches = iter_study_holdings(
            self.engine, now, batch=self.config.batch_size, institution_pk=institution_pk
        )
        for studies in batches:
            yield self._fates(studies, terms, default, now)

    def _fates(
        self, studies: list[StudyHoldings], terms: dict[int, Terms], default: Terms, now: datetime
    ) -> list[Fate]:
        holds = [
            HoldFacts(
                h.pk or 0,
                h.institution_pk,
                h.study_instance_uid,
                h.patient_id,
                h.issuer_of_patient_id,
            )
            for h in live_holds(
                self.engine,
                now,
                (s.study_uid for s in studies),
                ((s.patient_id, s.issuer_of_patient_id) for s in studies),
            )
        ]
        return [decide_fate(study, terms, default, holds, now) for study in studies]

    # -- running ------------------------------------------------------------------------------

    def run(self) -> SweepReport:
        with sweep_lock(self.engine) as lock:
            if lock is None:
                log.info("retention: another sweep holds the lock")
                return SweepReport(ran=False)
            return self._sweep(lock)

    def _sweep(self, lock: SweepLock) -> SweepReport:
        report = SweepReport()
        now = self.clock()
        changed = False
        for fates in self.iter_fates(now):
            if changed and self.config.pause_seconds:  # reading is cheap; deleting is the load
                self.sleep(self.config.pause_seconds)
            changed = any(fate.changes_something for fate in fates)
            for fate in fates:
                self._carry_out(fate, now, report)
            lock.renew()
        if report.studies_deleted or report.grants_removed:
            log.info("retention: %s", report.describe())
        return report

    def _carry_out(self, fate: Fate, now: datetime, report: SweepReport) -> None:
        if fate.held_by:
            report.held += 1
            return
        if fate.delete_study:
            if self._delete_study(fate, now):
                report.studies_deleted.append(fate.study.study_uid)
                metrics.RETENTION_DELETIONS.labels("study").inc()
            return
        for due in fate.expired_grants:
            self._remove_grant(fate.study, due, now)
            report.grants_removed += 1
            metrics.RETENTION_DELETIONS.labels("grant").inc()
        report.warnings_queued += sum(self._warn(fate.study, due, now) for due in fate.warnings)

    def _delete_study(self, fate: Fate, now: datetime) -> bool:
        """Audited first: a crash after the event and before the delete is redone next run."""
        study = fate.study
        holders = [
            {"institution_pk": d.holding.institution_pk, "kind": d.holding.kind.value,
             "arrived_at": d.holding.arrived_at.isoformat(), "due_at": d.due_at.isoformat()}
            for d in fate.dues
        ]  # fmt: skip
        self._audit(
            "delete",
            study,
            f"retention period ended for every holder; deleted {now.isoformat()}",
            None,
            holders=holders,
            deleted_at=now.isoformat(),
        )
        remember_transfer_facts(self.engine, study.study_uid)  # the oversight keeps finding it
        try:
            self.archive.delete(study.study_uid)
        except StudyNotFound:  # deleted meanwhile (by a person): nothing left to do
            return False
        remove_orphaned_reports(self.engine, study.study_uid)  # derived: they go with it
        note_study_deleted(self.engine, study.study_uid, ACTOR, now, by_retention=True)
        return True

    def _remove_grant(self, study: StudyHoldings, due: Due, now: datetime) -> None:
        holding = due.holding
        self._audit(
            "retention-grant-removed",
            study,
            f"retention period of institution {holding.institution_pk} ended",
            holding.institution_pk,
            grant_pk=holding.grant_pk,
            kind=holding.kind.value,
            due_at=due.due_at.isoformat(),
            removed_at=now.isoformat(),
        )
        with self.engine.begin() as connection:
            connection.execute(delete(StudyGrant).where(StudyGrant.pk == holding.grant_pk))  # type: ignore[arg-type]
        if holding.institution_pk is not None:  # its transfers there may expire
            note_grant_removed(self.engine, study.study_uid, holding.institution_pk, ACTOR, now)

    def _warn(self, study: StudyHoldings, due: Due, now: datetime) -> int:
        """Queues the holder's email once per deadline, in the transaction that records it."""
        holding = due.holding
        if holding.institution_pk is None:
            return 0
        table = RetentionWarning.__table__  # type: ignore[attr-defined]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        values = {
            "study_instance_uid": study.study_uid,
            "institution_pk": holding.institution_pk,
            "due_at": due.due_at,
            "warned_at": now,
        }
        with self.engine.begin() as connection:
            statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
            if connection.execute(statement.returning(table.c.pk)).first() is None:
                return 0  # announced already (by this sweep's predecessor)
            subject = (
                Subject("transfer", holding.transfer_pk)
                if holding.transfer_pk
                else Subject("study", study.study_pk)
            )
            event = Event(EventKind.STUDY_EXPIRING, holding.institution_pk, subject)
            notify(connection, event, now=now)
        return 1

    def _audit(
        self,
        action: str,
        study: StudyHoldings,
        reason: str,
        institution_pk: int | None,
        **detail: object,
    ) -> None:
        record(
            self.engine,
            AuditRecord(
                action=action,
                outcome=Outcome.ALLOWED,
                actor=ACTOR,
                actor_kind="system",
                institution_pk=institution_pk,
                rule=REASON,
                reason=reason,
                study_uid=study.study_uid,
                patient_id=study.patient_id,
                detail={"reason": REASON, **detail},
            ),
        )


def retention_sweeper(sweeper: Sweeper, interval_seconds: float) -> Callable[[], object]:
    """A periodic tick for `foundation.jobs.Worker(ticks=[...])`: a sweep at most every
    `interval_seconds` in this process; the lock keeps it to one sweep at a time overall."""
    last = [float("-inf")]

    def sweep() -> object:
        if time.monotonic() - last[0] < interval_seconds:
            return None
        last[0] = time.monotonic()
        return sweeper.run()

    return sweep
