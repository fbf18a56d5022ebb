"""QIDO results are exactly the studies `decide` allows the principal to search (property)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlmodel import Session

from archive.levels import Level
from archive.models import Study, StudyGrant
from archive.search import SearchQuery, StudyScope, search
from archive.store import Archive
from policy.decision import Context, GrantFacts, Resource, decide
from policy.principal import Principal, PrincipalKind
from policy.roles import Action, Role
from tests import factories
from tests.policy._people import add_institution

NOW = datetime.now(UTC)
WHEN = {"active": None, "expired": NOW - timedelta(days=1), "later": NOW + timedelta(days=1)}


def _store_studies(archive: Archive, owners: list[int]) -> list[tuple[int, str, int]]:
    """One small study per owner; returns (study pk, uid, owner)."""
    stored = []
    for position, owner in enumerate(owners):
        ds = factories.ct_slice(rows=8, columns=8)
        path = archive.blobs.spool_dir / f"property-{position}.dcm"
        path.write_bytes(factories.part10_bytes(ds))
        [outcome] = archive.store_files([path], institution_pk=owner)
        assert outcome.stored
        with Session(archive.engine) as session:
            pk = session.exec(
                select(Study.pk).where(Study.study_instance_uid == ds.StudyInstanceUID)
            ).one()[0]
        stored.append((pk, str(ds.StudyInstanceUID), owner))
    return stored


grant_specs = st.lists(
    st.tuples(
        st.integers(0, 5),  # study index
        st.integers(0, 3),  # institution index
        st.sampled_from(sorted(WHEN)),  # expiry
        st.booleans(),  # revoked
    ),
    max_size=8,
)
memberships = st.dictionaries(
    st.integers(0, 3), st.frozensets(st.sampled_from(list(Role)), max_size=2), max_size=3
)


def test_search_results_equal_what_decide_allows(archive: Archive) -> None:
    institutions = [add_institution(archive.engine, f"V{n}") for n in range(4)]
    owners = [institutions[n % 4] for n in range(6)]
    studies = _store_studies(archive, owners)

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(chosen=memberships, grants=grant_specs)
    def check(chosen: dict[int, frozenset[Role]], grants: list) -> None:
        rows = [
            StudyGrant(
                study_pk=studies[s][0],
                institution_pk=institutions[i],
                expires_at=WHEN[when],
                revoked_at=NOW - timedelta(minutes=1) if revoked else None,
            )
            for s, i, when, revoked in grants
        ]
        with Session(archive.engine, expire_on_commit=False) as session:
            session.add_all(rows)
            session.commit()
        try:
            principal = Principal(
                PrincipalKind.USER, 1, "p", {institutions[i]: r for i, r in chosen.items()}
            )
            scope = StudyScope(principal.institutions_for(Action.SEARCH), NOW)
            found = search(archive.engine, SearchQuery(Level.STUDY, scope=scope), "http://x")
            uids = {orjson.loads(doc)["0020000D"]["Value"][0] for doc in found.documents}
            expected = set()
            for pk, uid, owner in studies:
                facts = tuple(
                    GrantFacts(g.institution_pk, g.expires_at, g.revoked_at)
                    for g in rows
                    if g.study_pk == pk
                )
                resource = Resource.study(uid, owner, facts)
                if decide(principal, Action.SEARCH, resource, Context(NOW)).allowed:
                    expected.add(uid)
            assert uids == expected
        finally:
            with Session(archive.engine) as session:
                session.exec(delete(StudyGrant))  # type: ignore[call-overload]
                session.commit()

    check()
