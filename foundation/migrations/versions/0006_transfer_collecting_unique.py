"""transfers: one collecting transfer per route and study

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLLECTING = sa.text("status = 'collecting'")


def upgrade() -> None:
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.create_index(
            "uq_transfer_collecting",
            ["route_pk", "study_instance_uid"],
            unique=True,
            sqlite_where=COLLECTING,
            postgresql_where=COLLECTING,
        )


def downgrade() -> None:
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.drop_index("uq_transfer_collecting")
