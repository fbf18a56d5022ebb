"""Grants: access to a study for another institution, given, listed and revoked by administrators.

Grants live with the archive's index (`archive.models.StudyGrant`, joined by every search); the
portal may use both the archive and the policy, which must not know each other.
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


def _view(grant: StudyGrant, study: Study) -> GrantView:
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


def study_owner(engine: Engine, study_uid: str) -> int | None:
    """The owning institution's pk; UnknownRecord if no such study is indexed."""
    with Session(engine) as session:
        query = select(Study).where(Study.study_instance_uid == study_uid)
        study = session.exec(query).first()
    if study is None:
        raise UnknownRecord(f"no study {study_uid}")
    return study.institution_pk


def grant_study(
    engine: Engine,
    study_uid: str,
    institution_pk: int,
    *,
    expires_at: datetime | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> GrantView:
    """One live grant per study and institution: granting again while one is live is a conflict."""
    now = now or datetime.now(UTC)
    if expires_at is not None and expires_at <= now:
        raise InvalidRecord("a grant's expiry must be in the future")
    reason = check_text(reason, "reason", 256)
    with Session(engine, expire_on_commit=False) as session:
        study = session.exec(select(Study).where(Study.study_instance_uid == study_uid)).first()
        if study is None:
            raise UnknownRecord(f"no study {study_uid}")
        if study.institution_pk == institution_pk:
            raise InvalidRecord("an institution needs no grant on its own study")
        for existing in session.exec(_live(study.pk or 0, institution_pk, now)):
            raise DuplicateRecord(f"institution {institution_pk} already holds grant {existing.pk}")
        grant = StudyGrant(
            study_pk=study.pk or 0,
            institution_pk=institution_pk,
            granted_at=now,
            expires_at=expires_at,
            reason=reason,
        )
        session.add(grant)
        session.commit()
        return _view(grant, study)


def _live(study_pk: int, institution_pk: int, now: datetime) -> Any:
    return select(StudyGrant).where(
        StudyGrant.study_pk == study_pk,
        StudyGrant.institution_pk == institution_pk,
        col(StudyGrant.revoked_at).is_(None),
        or_(col(StudyGrant.expires_at).is_(None), col(StudyGrant.expires_at) > now),
    )


def get_grant(engine: Engine, pk: int) -> GrantView:
    with Session(engine) as session:
        row = session.exec(
            select(StudyGrant, Study)
            .join(Study, col(Study.pk) == StudyGrant.study_pk)
            .where(StudyGrant.pk == pk)
        ).first()
    if row is None:
        raise UnknownRecord(f"no grant {pk}")
    return _view(*row)


def list_grants(engine: Engine, institution_pk: int) -> list[GrantView]:
    """Grants an institution holds, and grants on the studies it owns."""
    query = (
        select(StudyGrant, Study)
        .join(Study, col(Study.pk) == StudyGrant.study_pk)
        .where(
            or_(
                col(StudyGrant.institution_pk) == institution_pk,
                col(Study.institution_pk) == institution_pk,
            )
        )
        .order_by(col(StudyGrant.pk))
    )
    with Session(engine) as session:
        return [_view(grant, study) for grant, study in session.exec(query)]


def revoke_grant(engine: Engine, pk: int, now: datetime | None = None) -> GrantView:
    """Effective at once: every search joins on the grant's revocation time."""
    with Session(engine, expire_on_commit=False) as session:
        grant = session.get(StudyGrant, pk)
        if grant is None:
            raise UnknownRecord(f"no grant {pk}")
        if grant.revoked_at is None:
            grant.revoked_at = now or datetime.now(UTC)
            session.add(grant)
            session.commit()
        study = session.get(Study, grant.study_pk)
        assert study is not None
        return _view(grant, study)


def revoke_grants(engine: Engine, study_uid: str, institution_pk: int) -> list[GrantView]:
    """Every live grant of a study to an institution (the command line names them so)."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        study = session.exec(select(Study).where(Study.study_instance_uid == study_uid)).first()
        if study is None:
            raise UnknownRecord(f"no study {study_uid}")
        pks = [g.pk for g in session.exec(_live(study.pk or 0, institution_pk, now))]
    return [revoke_grant(engine, pk, now) for pk in pks if pk is not None]
