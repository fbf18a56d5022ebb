"""notifications: each person's choice of emails, and the record of every email

Revision ID: 0009_notifications
Revises: 0006
Create Date: 2026-12-06 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009_notifications"
down_revision: str | None = "0006_account_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_preference",
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("choice", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_pk"], ["ferry_user.pk"]),
        sa.PrimaryKeyConstraint("user_pk"),
    )
    op.create_table(
        "notification",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("job_pk", sa.Integer(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("institution_pk", sa.Integer(), nullable=True),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("sent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["institution_pk"], ["institution.pk"]),
        sa.ForeignKeyConstraint(["user_pk"], ["ferry_user.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("job_pk", "user_pk"),
    )
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_job_pk"), ["job_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_notification_institution_pk"), ["institution_pk"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_notification_user_pk"), ["user_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_user_pk"))
        batch_op.drop_index(batch_op.f("ix_notification_institution_pk"))
        batch_op.drop_index(batch_op.f("ix_notification_job_pk"))
    op.drop_table("notification")
    op.drop_table("notification_preference")
