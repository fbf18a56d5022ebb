"""account security: membership invitations, revocable sign-in sessions

Revision ID: 0006_account_security
Revises: 0006 (written against 0005; relinked after 0006_transfer_collecting_unique)
Create Date: 2026-12-06 10:26:25.495878
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006_account_security"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "membership_invitation",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("institution_pk", sa.Integer(), nullable=False),
        sa.Column("roles", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("invited_by_pk", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_pk"],
            ["institution.pk"],
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_pk"],
            ["ferry_user.pk"],
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["ferry_user.pk"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("user_pk", "institution_pk"),
    )
    with op.batch_alter_table("membership_invitation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_membership_invitation_institution_pk"), ["institution_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_membership_invitation_user_pk"), ["user_pk"], unique=False
        )

    op.create_table(
        "user_session",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["ferry_user.pk"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("sid"),
    )
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_session_user_pk"), ["user_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_session_user_pk"))

    op.drop_table("user_session")
    with op.batch_alter_table("membership_invitation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_membership_invitation_user_pk"))
        batch_op.drop_index(batch_op.f("ix_membership_invitation_institution_pk"))

    op.drop_table("membership_invitation")
