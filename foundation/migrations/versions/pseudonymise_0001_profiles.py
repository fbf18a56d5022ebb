"""pseudonymisation profiles, the profile a transfer's copies were made with, and destination
rules that take only pseudonymised copies

Revision ID: pseudonymise_0001
Revises: endings_0001
Create Date: 2026-12-08 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "pseudonymise_0001"
down_revision: str | None = "endings_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pseudonymisation_profile",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("institution_pk", sa.Integer(), sa.ForeignKey("institution.pk"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("dates", sa.String(length=16), nullable=False),
        sa.Column("private_tags", sa.String(length=16), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.UniqueConstraint("institution_pk", "name", name="uq_pseudonymisation_profile_name"),
    )
    with op.batch_alter_table("transfer") as batch:
        batch.add_column(sa.Column("pseudonymised_with", sa.String(length=64), nullable=True))
    with op.batch_alter_table("destination_rule") as batch:
        batch.add_column(
            sa.Column("pseudonymised_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("destination_rule") as batch:
        batch.drop_column("pseudonymised_only")
    with op.batch_alter_table("transfer") as batch:
        batch.drop_column("pseudonymised_with")
    op.drop_table("pseudonymisation_profile")
