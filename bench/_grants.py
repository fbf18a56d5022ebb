"""The two principals of the guarded QIDO-RS comparison, and the study grants (PS3.18 10.6).

On one Ferry server holding one set of studies, all stored by (so owned by) the institution
BENCH: an owner, a user of BENCH, whose visibility is one owner match; and a grantee, a user of
`institutions` other institutions, none of which owns anything, who sees the same studies only
through study grants written into the index beside them. Both sign in the same way (a password
grant at /auth/token, then a Ferry JWT), so authentication costs both the same.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import sqlalchemy
from sqlalchemy import Engine, insert, select

from _http import UnexpectedAnswer
from _servers import FerryServer, Server
from archive.models import Study, StudyGrant
from policy.models import Institution, Membership, User

OWNER_EMAIL = "owner@bench.example"
GRANTEE_EMAIL = "grantee@bench.example"
ROLES = "viewer"
GRANT_REASON = "benchmark"


@dataclass(frozen=True)
class GrantTally:
    studies: int
    grants: int
    distinct_pairs: int  # (study, institution); fewer than grants when pairs repeat
    institutions: int


def open_index(server: FerryServer) -> Engine:
    """The server's own database, shared with it while it runs (SQLite in WAL mode)."""
    return sqlalchemy.create_engine(server.database_url, connect_args={"timeout": 60})


def create_institutions(engine: Engine, count: int) -> list[int]:
    """`count` institutions G01…, inserted directly: the CLI would take a second each."""
    now = datetime.now(UTC)
    rows = [
        {"code": f"G{number:02d}", "name": f"Grantee {number}", "timezone": "UTC",
         "contact": "", "worklist_restricted": True, "created_at": now}
        for number in range(1, count + 1)
    ]  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(Institution), rows)
        codes = [row["code"] for row in rows]
        found = connection.execute(
            select(Institution.pk).where(Institution.code.in_(codes)).order_by(Institution.pk)
        )
        pks = [int(pk) for pk in found.scalars()]
    if len(pks) != count:
        raise UnexpectedAnswer(f"{len(pks)} of {count} institutions found after inserting them")
    return pks


def create_principals(
    server: FerryServer, engine: Engine, institution_pks: Sequence[int]
) -> dict[str, str]:
    """The owner (a user of BENCH) and the grantee (a user of every institution given).

    Returns their passwords by email: random, never printed; the data folder is deleted after.
    """
    first, *others = institution_pks
    passwords = {email: secrets.token_urlsafe(18) for email in (OWNER_EMAIL, GRANTEE_EMAIL)}
    with engine.connect() as connection:
        code = connection.execute(
            select(Institution.code).where(Institution.pk == first)
        ).scalar_one()
    for email, institution in ((OWNER_EMAIL, server.institution), (GRANTEE_EMAIL, code)):
        server.admin("create-user", email, "--institution", institution,
                     "--roles", ROLES, "--password", passwords[email])  # fmt: skip
    with engine.begin() as connection:
        grantee = connection.execute(
            select(User.pk).where(User.email == GRANTEE_EMAIL)
        ).scalar_one()
        if others:
            connection.execute(
                insert(Membership),
                [{"user_pk": grantee, "institution_pk": pk, "roles": ROLES} for pk in others],
            )
    return passwords


def sign_in(server: FerryServer, name: str, email: str, password: str) -> Server:
    """A password grant at /auth/token; the access token goes with every request as `name`."""
    root = server.base_url.removesuffix("/dicom-web")
    response = httpx.post(
        f"{root}/auth/token",
        json={"username": email, "password": password},
        timeout=30.0,
    )
    if response.status_code != 200:
        raise UnexpectedAnswer(f"sign-in as {email}: HTTP {response.status_code} {response.text}")
    return Server(name, server.base_url, response.json()["access_token"])


def insert_grants(engine: Engine, institution_pks: Sequence[int], count: int) -> GrantTally:
    """`count` live grants spread over every study and institution, round robin.

    Grant k goes to study k mod S and institution (k div S + k mod S) mod I: each study gets
    about count/S grants, to different institutions, and pairs repeat only once all S × I are
    used (as when a study is transferred twice to the same institution).
    """
    now = datetime.now(UTC)
    with engine.begin() as connection:
        studies = [int(pk) for pk in connection.execute(select(Study.pk)).scalars()]
        if not studies:
            raise UnexpectedAnswer("no studies in the index to grant")
        width = len(institution_pks)
        pairs = [
            (
                studies[k % len(studies)],
                institution_pks[(k // len(studies) + k % len(studies)) % width],
            )
            for k in range(count)
        ]
        connection.execute(
            insert(StudyGrant),
            [
                {"study_pk": study, "institution_pk": institution, "granted_at": now,
                 "expires_at": None, "revoked_at": None, "reason": GRANT_REASON}
                for study, institution in pairs
            ],
        )  # fmt: skip
    return GrantTally(len(studies), count, len(set(pairs)), width)
