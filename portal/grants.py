"""Grants: access to a study for another institution, given, listed and revoked by administrators.

Grants live with the archive's index (`archive.models.StudyGrant`, joined by every search); they
are written by `exchange.grants` (shared with transfers) and listed and revoked here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from archive.models import Study, StudyGrant
from exchange.grants import GrantView as GrantView
from exchange.grants import grant_study as grant_study
from exchange.grants import grant_view as _view
from exchange.grants import live_grants as _live
from policy.store import UnknownRecord


def study_owner(engine: Engine, study_uid: str) -> int | None:
    """The owning institution's pk; UnknownRecord if no such study is indexed."""
    with Session(engine) as session:
        query = select(Study).where(Study.study_instance_uid == study_uid)
        study = session.exec(query).first()
    if study is None:
        raise UnknownRecord(f"no study {study_uid}")
    return study.institution_pk


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
