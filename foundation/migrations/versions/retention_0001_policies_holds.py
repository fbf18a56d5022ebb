"""retention: institutions' periods, holds, warnings sent, the sweep's lock row

Revision ID: retention_0001
Revises: 0007_grant_actions
Create Date: 2026-12-06 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "retention_0001"
down_revision: str | None = "0007_grant_actions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "retention_policy",
        sa.Column("institution_pk", sa.Integer(), nullable=False),
        sa.Column("worklist_days", sa.Integer(), nullable=True),
        sa.Column("node_days", sa.Integer(), nullable=True),
        sa.Column("upload_days", sa.Integer(), nullable=True),
        sa.Column("warn_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", _TIME(), nullable=False),
        sa.Column("updated_by", _TEXT(length=256), nullable=False),
        sa.ForeignKeyConstraint(["institution_pk"], ["institution.pk"]),
        sa.PrimaryKeyConstraint("institution_pk"),
    )
    op.create_table(
        "retention_hold",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("institution_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", _TEXT(length=64), nullable=False),
        sa.Column("patient_id", _TEXT(length=64), nullable=False),
        sa.Column("issuer_of_patient_id", _TEXT(length=64), nullable=False),
        sa.Column("reason", _TEXT(length=1024), nullable=False),
        sa.Column("until", _TIME(), nullable=False),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("created_by", _TEXT(length=256), nullable=False),
        sa.Column("released_at", _TIME(), nullable=True),
        sa.Column("released_by", _TEXT(length=256), nullable=False),
        sa.ForeignKeyConstraint(["institution_pk"], ["institution.pk"]),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("retention_hold", schema=None) as batch_op:
        batch_op.create_index("ix_retention_hold_institution_pk", ["institution_pk"])
        batch_op.create_index("ix_retention_hold_study_instance_uid", ["study_instance_uid"])
        batch_op.create_index("ix_retention_hold_patient", ["patient_id", "issuer_of_patient_id"])
    op.create_table(
        "retention_warning",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", _TEXT(length=64), nullable=False),
        sa.Column("institution_pk", sa.Integer(), nullable=False),
        sa.Column("due_at", _TIME(), nullable=False),
        sa.Column("warned_at", _TIME(), nullable=False),
        sa.ForeignKeyConstraint(["institution_pk"], ["institution.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("study_instance_uid", "institution_pk", "due_at"),
    )
    op.create_table(
        "retention_sweep_lock",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("holder", _TEXT(length=256), nullable=False),
        sa.Column("locked_until", _TIME(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.execute("INSERT INTO retention_sweep_lock (pk, holder) VALUES (1, '')")


def downgrade() -> None:
    op.drop_table("retention_sweep_lock")
    op.drop_table("retention_warning")
    with op.batch_alter_table("retention_hold", schema=None) as batch_op:
        batch_op.drop_index("ix_retention_hold_patient")
        batch_op.drop_index("ix_retention_hold_study_instance_uid")
        batch_op.drop_index("ix_retention_hold_institution_pk")
    op.drop_table("retention_hold")
    op.drop_table("retention_policy")
