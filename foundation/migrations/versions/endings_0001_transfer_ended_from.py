"""transfer ended_from: where a transfer stood when retention or a deletion ended it

Transfers ended before this revision get the state of their last history row before the end
(a row noting a second view or download is read as the state it names: the best the history
holds).

Revision ID: endings_0001
Revises: zipcrc_0001
Create Date: 2026-12-07 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "endings_0001"
down_revision: str | None = "zipcrc_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transfer") as batch:
        batch.add_column(sa.Column("ended_from", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE transfer SET ended_from = ("
        " SELECT e.status FROM transfer_event e"
        " WHERE e.transfer_pk = transfer.pk AND e.status NOT IN ('expired', 'deleted')"
        " ORDER BY e.pk DESC LIMIT 1"
        ") WHERE status IN ('expired', 'deleted')"
    )


def downgrade() -> None:
    with op.batch_alter_table("transfer") as batch:
        batch.drop_column("ended_from")
