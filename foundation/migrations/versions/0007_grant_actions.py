"""grants carry their own actions; nodes may opt out of the peer address check

Revision ID: 0007_grant_actions
Revises: 0006
Create Date: 2026-12-06 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007_grant_actions"
down_revision: str | None = "0011_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READ_AND_DOWNLOAD = "search,read-metadata,read-pixels,download"


def upgrade() -> None:
    with op.batch_alter_table("study_grant", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "actions",
                sqlmodel.sql.sqltypes.AutoString(length=128),
                nullable=False,
                server_default=READ_AND_DOWNLOAD,
            )
        )
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("any_address", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.drop_column("any_address")
    with op.batch_alter_table("study_grant", schema=None) as batch_op:
        batch_op.drop_column("actions")
