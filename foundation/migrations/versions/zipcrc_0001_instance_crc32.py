"""instance crc32: each blob's CRC-32, NULL until a ZIP download first reads the blob

Revision ID: zipcrc_0001
Revises: loose_ends_0001
Create Date: 2026-12-07 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "zipcrc_0001"
down_revision: str | None = "loose_ends_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.add_column(sa.Column("crc32", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("crc32")
