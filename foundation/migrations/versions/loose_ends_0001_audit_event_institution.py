"""audit event institutions: the institutions a sign-in event concerns (the person's)

Revision ID: loose_ends_0001
Revises: portal_privacy_0001
Create Date: 2026-12-06 22:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "loose_ends_0001"
down_revision: str | None = "portal_privacy_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event_institution",
        sa.Column("institution_pk", sa.Integer(), nullable=False),
        sa.Column("event_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("institution_pk", "event_pk"),
    )


def downgrade() -> None:
    op.drop_table("audit_event_institution")
