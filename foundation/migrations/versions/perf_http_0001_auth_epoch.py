"""the revocation epoch: one counter, bumped by triggers on whatever narrows a credential

Revision ID: perf_http_0001_auth_epoch
Revises: retention_0002
Create Date: 2026-12-06 16:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "perf_http_0001_auth_epoch"
down_revision: str | None = "retention_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE auth_epoch SET value = value + 1 WHERE pk = 1"
# (table, event): every change that can narrow what a cached principal may do.
EVENTS = (
    ("ferry_user", "UPDATE OF status, token_version, system_admin, email"),
    ("ferry_user", "DELETE"),
    ("membership", "INSERT"),
    ("membership", "UPDATE"),
    ("membership", "DELETE"),
    ("api_client", "UPDATE"),
    ("api_client", "DELETE"),
    ("api_token", "UPDATE OF revoked_at, expires_at, scopes, secret_hash, client_pk"),
    ("api_token", "DELETE"),
    ("user_session", "UPDATE OF revoked_at, expires_at, user_pk, sid"),
    ("user_session", "DELETE"),
)


def _name(table: str, event: str) -> str:
    return f"auth_epoch_{table}_{event.split()[0].lower()}"


def upgrade() -> None:
    op.create_table(
        "auth_epoch",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.execute("INSERT INTO auth_epoch (pk, value) VALUES (1, 0)")
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(
            "CREATE FUNCTION bump_auth_epoch() RETURNS trigger AS $$ "
            f"BEGIN {BUMP}; RETURN NULL; END $$ LANGUAGE plpgsql"
        )
    for table, event in EVENTS:
        if postgres:
            op.execute(
                f"CREATE TRIGGER {_name(table, event)} AFTER {event} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION bump_auth_epoch()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {_name(table, event)} AFTER {event} ON {table} BEGIN {BUMP}; END"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, event in EVENTS:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {_name(table, event)}{on}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS bump_auth_epoch()")
    op.drop_table("auth_epoch")
