"""The sweeper against a real database and mailbox, with retention's clock set by the test."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from archive.models import StudyGrant
from audit.search import AuditQuery, iter_events
from exchange.grants import grant_study, list_grants
from exchange.holds import NewHold, place_hold, release_hold
from exchange.retention_terms import set_policy
from foundation.errors import StudyNotFound
from retention.lock import sweep_lock
from tests.factories import StudySpec
from tests.retention.conftest import Place

SECRET = StudySpec(
    patient_name="Secret^Patient", patient_id="PID-SECRET-9", accession_number="ACC-SECRET-9"
)


def _gone(place: Place, uid: str) -> bool:
    try:
        place.archive.find_instances(uid)
    except StudyNotFound:
        return True
    return False


def _blobs(place: Place) -> list[str]:
    return list(place.archive.blobs.iter_keys())


def test_a_study_is_announced_then_deleted_when_its_time_is_up(place: Place) -> None:
    place.person("a-all@a.test", {place.a: "viewer"}, "all")
    place.person("a-own@a.test", {place.a: "viewer"})  # the default: own
    place.person("b-all@b.test", {place.b: "viewer"}, "all")
    uid, arrived = place.add_study(place.a, SECRET)

    place.at(arrived, 12.9)
    assert place.sweeper.run().warnings_queued == 0
    place.at(arrived, 13.5)  # 15 days, warned 2 days before
    assert place.sweeper.run().warnings_queued == 1
    [mail] = place.mail_to("a-all@a.test")
    assert mail.subject == "[Ferry] Study about to expire at Institution A (A)"
    assert "will then be deleted" in mail.texts()["text/plain"]
    assert "/portal/studies/" in mail.texts()["text/plain"]  # the index's key, not the UID
    decoded = "\n".join(mail.texts().values())
    for secret in ("Secret", "PID-SECRET-9", "ACC-SECRET-9", uid):
        assert secret.encode() not in mail.raw and secret not in decoded, secret
    assert place.mail_to("a-own@a.test") == place.mail_to("b-all@b.test") == []
    place.at(arrived, 14.5)
    assert place.sweeper.run().warnings_queued == 0  # each deadline is announced once
    assert not _gone(place, uid) and _blobs(place)

    place.at(arrived, 15.01)
    report = place.sweeper.run()

    assert report.studies_deleted == [uid]
    assert _gone(place, uid) and _blobs(place) == []
    [event] = iter_events(place.engine, AuditQuery(study_uid=uid, action="delete"))
    detail = orjson.loads(event.detail)
    assert (event.outcome, event.actor, event.rule) == ("allowed", "ferry:retention", "retention")
    assert detail["reason"] == "retention" and detail["deleted_at"].startswith(
        place.clock.now.date().isoformat()
    )
    assert event.patient_id == "PID-SECRET-9"  # the record says whose study went
    assert place.sweeper.run().studies_deleted == []


def test_an_institution_s_own_period_applies(place: Place) -> None:
    set_policy(place.engine, place.a, {"upload_days": 40}, place.settings.retention_defaults(),
               actor="test", now=place.clock())  # fmt: skip
    uid, arrived = place.add_study(place.a)
    place.at(arrived, 20)
    assert place.sweeper.run().studies_deleted == []
    place.at(arrived, 40.01)
    assert place.sweeper.run().studies_deleted == [uid]


def test_a_hold_keeps_a_study_until_released(place: Place) -> None:
    uid, arrived = place.add_study(place.a)
    other, _ = place.add_study(place.a, StudySpec(patient_id="SOMEONE-ELSE"))
    by_study = place_hold(
        place.engine,
        NewHold(place.a, "litigation 2026-17", arrived + timedelta(days=60), study_uid=uid),
        actor="user:legal@a.test",
        now=arrived,
    )
    place.at(arrived, 30)
    report = place.sweeper.run()
    assert report.studies_deleted == [other] and report.held == 1
    assert not _gone(place, uid)
    release_hold(place.engine, by_study.pk or 0, actor="user:legal@a.test", now=place.clock())
    assert place.sweeper.run().studies_deleted == [uid]


def test_a_patient_hold_covers_the_patient_s_studies_and_ends_on_its_date(place: Place) -> None:
    spec = StudySpec(patient_id="HELD-1")
    first, arrived = place.add_study(place.a, spec)
    second, _ = place.add_study(place.a, spec.new_study())
    place_hold(
        place.engine,
        NewHold(place.a, "clinical trial", arrived + timedelta(days=20), patient_id="HELD-1"),
        actor="user:legal@a.test",
        now=arrived,
    )
    place.at(arrived, 19)
    assert place.sweeper.run().held == 2
    place.at(arrived, 20.01)  # the hold has ended
    assert sorted(place.sweeper.run().studies_deleted) == sorted([first, second])


def test_a_study_received_by_two_institutions_keeps_each_clock(place: Place) -> None:
    uid, arrived = place.add_study(place.a)
    grant_study(place.engine, uid, place.b, reason="transfer to B", now=arrived)
    later = arrived + timedelta(days=10)
    grant_study(place.engine, uid, place.c, reason="transfer to C", now=later)

    place.at(arrived, 15.01)
    report = place.sweeper.run()

    assert report.studies_deleted == [] and report.grants_removed == 1
    holders = {g.institution_pk for g in list_grants(place.engine, place.a)}
    assert holders == {place.c}  # B's time is up, C's is not: the study stays
    assert not _gone(place, uid)
    [removed] = iter_events(place.engine, AuditQuery(action="retention-grant-removed"))
    assert removed.institution_pk == place.b and removed.study_uid == uid

    place.at(arrived, 25.01)  # C's time is up: the last holder's
    assert place.sweeper.run().studies_deleted == [uid]
    assert _gone(place, uid) and _blobs(place) == []
    with place.engine.connect() as connection:
        assert connection.execute(StudyGrant.__table__.select()).all() == []  # type: ignore[attr-defined]


def test_a_sweep_does_nothing_while_another_holds_the_lock(place: Place) -> None:
    uid, arrived = place.add_study(place.a)
    place.at(arrived, 16)
    with sweep_lock(place.engine) as held:
        assert held is not None
        report = place.sweeper.run()
    assert not report.ran and not _gone(place, uid)
    assert place.sweeper.run().studies_deleted == [uid]  # released: the next sweep runs


def test_the_job_worker_sweeps(place: Place) -> None:
    uid, arrived = place.add_study(place.a)
    place.at(arrived, 16)
    place.worker.run_ticks()
    assert _gone(place, uid)


@pytest.mark.parametrize("days", [0, -1])
def test_bad_periods_are_refused(place: Place, days: int) -> None:
    from policy.store import InvalidRecord

    with pytest.raises(InvalidRecord, match="between 1 and"):
        set_policy(place.engine, place.a, {"worklist_days": days},
                   place.settings.retention_defaults(), actor="t", now=place.clock())  # fmt: skip
