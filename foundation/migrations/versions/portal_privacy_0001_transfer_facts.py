"""transfer facts: a transfer keeps its studies' Patient ID and accession number past deletion

Revision ID: portal_privacy_0001
Revises: atna_metrics_0001
Create Date: 2026-12-06 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "portal_privacy_0001"
down_revision: str | None = "portal_oidc_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
TABLES = ("transfer", "transfer_study")
COLUMNS = ("patient_id", "accession_number")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in COLUMNS:
                batch_op.add_column(
                    sa.Column(column, _TEXT(length=64), nullable=False, server_default="")
                )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in COLUMNS:
                batch_op.drop_column(column)
