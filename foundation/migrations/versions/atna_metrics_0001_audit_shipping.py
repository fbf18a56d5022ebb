"""audit shipping: how far the trail has reached the audit record repository

Revision ID: atna_metrics_0001
Revises: perf_http_0001_auth_epoch
Create Date: 2026-12-06 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "atna_metrics_0001"
down_revision: str | None = "perf_http_0001_auth_epoch"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "audit_shipping",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("last_pk", sa.BigInteger(), nullable=False),
        sa.Column("destination", _TEXT(length=512), nullable=False),
        sa.Column("locked_by", _TEXT(length=128), nullable=False),
        sa.Column("locked_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_error", _TEXT(length=1024), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )


def downgrade() -> None:
    op.drop_table("audit_shipping")
