"""transfers by people and tools: opaque ids, priority, note, studies, reports, state history

Revision ID: 0010_transfers_by_people
Revises: 0006
Create Date: 2026-12-05 12:00:00.000000
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010_transfers_by_people"
down_revision: str | None = "0009_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def _columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("public_id", _TEXT(length=32), nullable=True),
        sa.Column("origin", _TEXT(length=16), nullable=False, server_default="push"),
        sa.Column("priority", _TEXT(length=16), nullable=False, server_default="routine"),
        sa.Column("note", _TEXT(length=4000), nullable=False, server_default=""),
        sa.Column("created_by", _TEXT(length=256), nullable=False, server_default=""),
        sa.Column("sent_at", _TIME(), nullable=True),
        sa.Column("done_at", _TIME(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        for column in _columns():
            batch_op.add_column(column)
    connection = op.get_bind()
    transfer = sa.table("transfer", sa.column("pk", sa.Integer), sa.column("public_id"))
    for (pk,) in connection.execute(sa.select(transfer.c.pk)).all():
        connection.execute(
            transfer.update().where(transfer.c.pk == pk).values(public_id=secrets.token_urlsafe(18))
        )
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.alter_column("public_id", existing_type=_TEXT(length=32), nullable=False)
        batch_op.create_index(batch_op.f("ix_transfer_public_id"), ["public_id"], unique=True)
    op.create_table(
        "transfer_study",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("transfer_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", _TEXT(length=64), nullable=False),
        sa.Column("job_pk", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["transfer_pk"], ["transfer.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("transfer_pk", "study_instance_uid"),
    )
    with op.batch_alter_table("transfer_study", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transfer_study_transfer_pk"), ["transfer_pk"])
        batch_op.create_index(
            batch_op.f("ix_transfer_study_study_instance_uid"), ["study_instance_uid"]
        )
    op.create_table(
        "transfer_report",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("transfer_pk", sa.Integer(), nullable=False),
        sa.Column("title", _TEXT(length=256), nullable=False),
        sa.Column("text", _TEXT(length=16000), nullable=False),
        sa.ForeignKeyConstraint(["transfer_pk"], ["transfer.pk"]),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("transfer_report", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transfer_report_transfer_pk"), ["transfer_pk"])
    op.create_table(
        "transfer_event",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("transfer_pk", sa.Integer(), nullable=False),
        sa.Column("at", _TIME(), nullable=False),
        sa.Column("actor", _TEXT(length=256), nullable=False),
        sa.Column("status", _TEXT(length=32), nullable=False),
        sa.Column("reason", _TEXT(length=1024), nullable=False),
        sa.ForeignKeyConstraint(["transfer_pk"], ["transfer.pk"]),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("transfer_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transfer_event_transfer_pk"), ["transfer_pk"])


def downgrade() -> None:
    for table in ("transfer_event", "transfer_report", "transfer_study"):
        op.drop_table(table)
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_public_id"))
        for column in reversed(_columns()):
            batch_op.drop_column(column.name)
