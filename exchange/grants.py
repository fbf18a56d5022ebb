"""Grants: another institution's access to a study, given by a transfer or by an administrator.

Grants live with the archive's index (`archive.models.StudyGrant`, joined by every search). They
are written here, where the archive and the policy may meet, so that transfers (in their own
transaction, beside a forwarding job) and the portal (on its own) write them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from archive.models import Study, StudyGrant
from policy.store import DuplicateRecord, InvalidRecord, UnknownRecord, check_text


@dataclass(frozen=True)
class GrantView:
    pk: int
    study_uid: str
    owner_institution_pk: int | None
    institution_pk: int
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    reason: str


def grant_view(grant: StudyGrant, study: Study) -> GrantView:
    return GrantView(
        pk=grant.pk or 0,
        study_uid=study.study_instance_uid,
        owner_institution_pk=study.institution_pk,
        institution_pk=grant.institution_pk,
        granted_at=grant.granted_at,
        expires_at=grant.expires_at,
        revoked_at=grant.revoked_at,
        reason=grant.reason,
    )


def live_grants(study_pk: int, institution_pk: int, now: datetime) -> Any:
    """Grants of a study to an institution that are neither revoked nor expired at `now`."""
    return select(StudyGrant).where(
        StudyGrant.study_pk == study_pk,
        StudyGrant.institution_pk == institution_pk,
        col(StudyGrant.revoked_at).is_(None),
        or_(col(StudyGrant.expires_at).is_(None), col(StudyGrant.expires_at) > now),
    )


def add_grant(
    session: Session,
    study_uid: str,
    institution_pk: int,
    *,
    now: datetime,
    expires_at: datetime | None = None,
    reason: str = "",
) -> GrantView:
    """Writes the grant in the session's transaction (flushed, not committed).

    One live grant per study and institution: granting again while one is live is a conflict;
    the checks raise before anything is written, so the transaction stays usable.
    """
    if expires_at is not None and expires_at <= now:
        raise InvalidRecord("a grant's expiry must be in the future")
    reason = check_text(reason, "reason", 256)
    study = session.exec(select(Study).where(Study.study_instance_uid == study_uid)).first()
    if study is None:
        raise UnknownRecord(f"no study {study_uid}")
    if study.institution_pk == institution_pk:
        raise InvalidRecord("an institution needs no grant on its own study")
    for existing in session.exec(live_grants(study.pk or 0, institution_pk, now)):
        raise DuplicateRecord(f"institution {institution_pk} already holds grant {existing.pk}")
    grant = StudyGrant(
        study_pk=study.pk or 0,
        institution_pk=institution_pk,
        granted_at=now,
        expires_at=expires_at,
        reason=reason,
    )
    session.add(grant)
    session.flush()
    return grant_view(grant, study)


def grant_study(
    engine: Engine,
    study_uid: str,
    institution_pk: int,
    *,
    expires_at: datetime | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> GrantView:
    """A grant on its own, committed (administrators, the command line)."""
    with Session(engine, expire_on_commit=False) as session:
        view = add_grant(
            session,
            study_uid,
            institution_pk,
            now=now or datetime.now(UTC),
            expires_at=expires_at,
            reason=reason,
        )
        session.commit()
        return view
