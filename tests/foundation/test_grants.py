"""The grant rule in its two forms (Python and SQL) agrees, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from archive.models import Patient, Study, StudyGrant
from archive.store import Archive
from foundation.grants import (
    GRANTABLE_ACTIONS,
    InvalidGrantActions,
    format_grant_actions,
    grant_allows,
    grant_allows_clause,
    grant_is_live,
    live_grant_clause,
    parse_grant_actions,
)
from tests.policy._people import add_institution

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
MOMENTS = [
    None,
    NOW - timedelta(days=1),
    NOW - timedelta(seconds=1),
    NOW,  # the instant itself: expired, revoked
    NOW + timedelta(seconds=1),
    NOW + timedelta(days=1),
]
ACTION_SETS = [
    "search,read-metadata,read-pixels,download",
    "search,read-metadata,read-pixels",
    "download",
    "read-pixels,download",
    "delete,store",  # never written by Ferry; the rule must still refuse it
]
ACTIONS = [*GRANTABLE_ACTIONS, "delete", "store"]


def _study(archive: Archive) -> int:
    owner = add_institution(archive.engine, "OWNER")
    with Session(archive.engine) as session:
        patient = Patient(patient_id="P")
        session.add(patient)
        session.flush()
        study = Study(
            patient_pk=patient.pk, study_instance_uid="1.2.3", institution_pk=owner, attrs_json=b""
        )
        session.add(study)
        session.commit()
        assert study.pk is not None
        return study.pk


def test_liveness_in_sql_agrees_with_python(archive: Archive) -> None:
    study_pk = _study(archive)
    holder = add_institution(archive.engine, "HOLDER")
    cases = {}
    with Session(archive.engine) as session:
        for expires, revoked in itertools.product(MOMENTS, MOMENTS):
            grant = StudyGrant(
                study_pk=study_pk, institution_pk=holder, expires_at=expires, revoked_at=revoked
            )
            session.add(grant)
            session.flush()
            cases[grant.pk] = grant_is_live(expires, revoked, NOW)
        session.commit()
    live = live_grant_clause(StudyGrant.expires_at, StudyGrant.revoked_at, NOW)
    with archive.engine.connect() as connection:
        found = set(connection.execute(select(StudyGrant.pk).where(live)).scalars())
    assert found == {pk for pk, expected in cases.items() if expected}
    assert 0 < len(found) < len(cases)


def test_a_revocation_scheduled_for_later_leaves_the_grant_live_until_then() -> None:
    later = NOW + timedelta(hours=1)
    assert grant_is_live(None, later, NOW)
    assert not grant_is_live(None, later, later)
    assert not grant_is_live(NOW + timedelta(days=1), NOW, NOW)


def test_actions_in_sql_agree_with_python(archive: Archive) -> None:
    study_pk = _study(archive)
    holder = add_institution(archive.engine, "HOLDER")
    stored = {}
    with Session(archive.engine) as session:
        for actions in ACTION_SETS:
            grant = StudyGrant(study_pk=study_pk, institution_pk=holder, actions=actions)
            session.add(grant)
            session.flush()
            stored[grant.pk] = actions
        session.commit()
    with archive.engine.connect() as connection:
        for action in ACTIONS:
            clause = grant_allows_clause(StudyGrant.actions, action)
            found = set(connection.execute(select(StudyGrant.pk).where(clause)).scalars())
            expected = {pk for pk, actions in stored.items() if grant_allows(actions, action)}
            assert found == expected, action


def test_a_grant_is_read_and_download_unless_narrowed(archive: Archive) -> None:
    study_pk = _study(archive)
    holder = add_institution(archive.engine, "HOLDER")
    with Session(archive.engine) as session:
        grant = StudyGrant(study_pk=study_pk, institution_pk=holder)
        session.add(grant)
        session.commit()
        assert parse_grant_actions(grant.actions) == set(GRANTABLE_ACTIONS)
    assert not grant_allows("search,read-metadata,read-pixels,download,delete", "delete")


@pytest.mark.parametrize("text", ["delete", "search,store", "", "read"])
def test_grant_actions_outside_reading_are_refused(text: str) -> None:
    with pytest.raises(InvalidGrantActions):
        parse_grant_actions(text)


def test_grant_actions_are_stored_in_one_order() -> None:
    assert format_grant_actions(["download", "search"]) == "search,download"
