"""portal sign-in with an OpenID Connect provider: sign-ins under way, and a session's provider

Revision ID: portal_oidc_0001
Revises: atna_metrics_0001
Create Date: 2026-12-06 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "portal_oidc_0001"
down_revision: str | None = "atna_metrics_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_MOMENT = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "oidc_sign_in",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("state_hash", _TEXT(length=64), nullable=False),
        sa.Column("provider", _TEXT(length=32), nullable=False),
        sa.Column("nonce", _TEXT(length=64), nullable=False),
        sa.Column("code_verifier", _TEXT(length=128), nullable=False),
        sa.Column("next_path", _TEXT(length=1024), nullable=False),
        sa.Column("created_at", _MOMENT(), nullable=False),
        sa.Column("expires_at", _MOMENT(), nullable=False),
        sa.Column("used_at", _MOMENT(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("state_hash"),
    )
    op.create_index("ix_oidc_sign_in_expires_at", "oidc_sign_in", ["expires_at"], unique=False)
    # Plain ADD COLUMN (no table rebuild on SQLite), so the revocation-epoch triggers stay.
    op.add_column("user_session", sa.Column("issuer", _TEXT(length=512), nullable=True))
    op.add_column("user_session", sa.Column("external_memberships", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.drop_column("external_memberships")
        batch_op.drop_column("issuer")
    op.drop_index("ix_oidc_sign_in_expires_at", table_name="oidc_sign_in")
    op.drop_table("oidc_sign_in")
