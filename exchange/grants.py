"""Grants: another institution's access to a study, given by a transfer or by an administrator.

The one home for grant records: written (by transfers, in their own transaction beside a
forwarding job, and by administrators), listed and revoked here. The rows live with the
archive's index (`archive.models.StudyGrant`, joined by every search); when a grant is live
and what it allows is `foundation.grants`, shared by the searches and by `policy.decide()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from archive.models import Study, StudyGrant
from foundation.grants import (
    DEFAULT_GRANT_ACTIONS,
    InvalidGrantActions,
    format_grant_actions,
    grant_is_live,
    live_grant_clause,
)
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
    actions: tuple[str, ...]

    def live(self, now: datetime) -> bool:
        return grant_is_live(self.expires_at, self.revoked_at, now)


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
        actions=tuple(grant.actions.split(",")),
    )


def live_grants(study_pk: int, institution_pk: int, now: datetime) -> Any:
    """Grants of a study to an institution that are live at `now` (`foundation.grants`)."""
    return select(StudyGrant).where(
        StudyGrant.study_pk == study_pk,
        StudyGrant.institution_pk == institution_pk,
        live_grant_clause(col(StudyGrant.expires_at), col(StudyGrant.revoked_at), now),
    )


def _study(session: Session, study_uid: str) -> Study:
    study = session.exec(select(Study).where(Study.study_instance_uid == study_uid)).first()
    if study is None:
        raise UnknownRecord(f"no study {study_uid}")
    return study


def add_grant(
    session: Session,
    study_uid: str,
    institution_pk: int,
    *,
    now: datetime,
    expires_at: datetime | None = None,
    reason: str = "",
    actions: Iterable[str] = DEFAULT_GRANT_ACTIONS,
) -> GrantView:
    """Writes the grant in the session's transaction (flushed, not committed).

    One live grant per study and institution: granting again while one is live is a conflict;
    the checks raise before anything is written, so the transaction stays usable.
    """
    if expires_at is not None and expires_at <= now:
        raise InvalidRecord("a grant's expiry must be in the future")
    reason = check_text(reason, "reason", 256)
    try:
        stored_actions = format_grant_actions(actions)
    except InvalidGrantActions as error:
        raise InvalidRecord(str(error)) from None
    study = _study(session, study_uid)
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
        actions=stored_actions,
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
    actions: Iterable[str] = DEFAULT_GRANT_ACTIONS,
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
            actions=actions,
        )
        session.commit()
        return view


def study_owner(engine: Engine, study_uid: str) -> int | None:
    """The owning institution's pk; UnknownRecord if no such study is indexed."""
    with Session(engine) as session:
        return _study(session, study_uid).institution_pk


def get_grant(engine: Engine, pk: int) -> GrantView:
    with Session(engine) as session:
        row = session.exec(
            select(StudyGrant, Study)
            .join(Study, col(Study.pk) == StudyGrant.study_pk)
            .where(StudyGrant.pk == pk)
        ).first()
    if row is None:
        raise UnknownRecord(f"no grant {pk}")
    return grant_view(*row)


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
        return [grant_view(grant, study) for grant, study in session.exec(query)]


def revoke_grant(engine: Engine, pk: int, now: datetime | None = None) -> GrantView:
    """Effective at once (a revocation scheduled for later is brought forward to now)."""
    moment = now or datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as session:
        grant = session.get(StudyGrant, pk)
        if grant is None:
            raise UnknownRecord(f"no grant {pk}")
        if grant_is_live(None, grant.revoked_at, moment):  # not revoked yet
            grant.revoked_at = moment
            session.add(grant)
            session.commit()
        study = session.get(Study, grant.study_pk)
        assert study is not None
        return grant_view(grant, study)


def revoke_grants(engine: Engine, study_uid: str, institution_pk: int) -> list[GrantView]:
    """Every live grant of a study to an institution (the command line names them so)."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        study = _study(session, study_uid)
        pks = [g.pk for g in session.exec(live_grants(study.pk or 0, institution_pk, now))]
    return [revoke_grant(engine, pk, now) for pk in pks if pk is not None]
