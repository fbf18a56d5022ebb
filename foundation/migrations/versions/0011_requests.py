"""requests for imaging and their answers: requests, answers (transfers), state history

Revision ID: 0011_requests
Revises: 0010_transfers_by_people
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011_requests"
down_revision: str | None = "0010_transfers_by_people"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def _text(name: str, length: int) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, _TEXT(length=length), nullable=False)


def upgrade() -> None:
    op.create_table(
        "imaging_request",
        sa.Column("pk", sa.Integer(), nullable=False),
        _text("public_id", 32),
        sa.Column("requesting_institution_pk", sa.Integer(), nullable=False),
        sa.Column("asked_institution_pk", sa.Integer(), nullable=False),
        sa.Column("destination_node_pk", sa.Integer(), nullable=True),
        _text("status", 32),
        _text("status_reason", 1024),
        _text("urgency", 16),
        _text("patient_id", 64),
        _text("issuer_of_patient_id", 64),
        _text("patient_name", 324),
        _text("patient_birth_date", 8),
        _text("patient_sex", 16),
        _text("accession_numbers", 1024),
        _text("study_date_from", 8),
        _text("study_date_to", 8),
        _text("modalities", 128),
        _text("body_part", 64),
        _text("details", 4000),
        _text("clinical_reason", 1024),
        _text("created_by", 256),
        sa.Column("created_by_user_pk", sa.Integer(), nullable=True),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("expires_at", _TIME(), nullable=False),
        sa.Column("closed_at", _TIME(), nullable=True),
        sa.ForeignKeyConstraint(["requesting_institution_pk"], ["institution.pk"]),
        sa.ForeignKeyConstraint(["asked_institution_pk"], ["institution.pk"]),
        sa.ForeignKeyConstraint(["destination_node_pk"], ["node.pk"]),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("imaging_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_request_public_id"), ["public_id"], unique=True
        )
        for column in ("requesting_institution_pk", "asked_institution_pk", "patient_id"):
            batch_op.create_index(batch_op.f(f"ix_imaging_request_{column}"), [column])
        batch_op.create_index("ix_imaging_request_asked_status", ["asked_institution_pk", "status"])
    op.create_table(
        "request_answer",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("request_pk", sa.Integer(), nullable=False),
        sa.Column("transfer_pk", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["request_pk"], ["imaging_request.pk"]),
        sa.ForeignKeyConstraint(["transfer_pk"], ["transfer.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("request_pk", "transfer_pk"),
    )
    with op.batch_alter_table("request_answer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_request_answer_request_pk"), ["request_pk"])
        batch_op.create_index(batch_op.f("ix_request_answer_transfer_pk"), ["transfer_pk"])
    op.create_table(
        "request_event",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("request_pk", sa.Integer(), nullable=False),
        sa.Column("at", _TIME(), nullable=False),
        _text("actor", 256),
        _text("status", 32),
        _text("reason", 1024),
        sa.ForeignKeyConstraint(["request_pk"], ["imaging_request.pk"]),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("request_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_request_event_request_pk"), ["request_pk"])


def downgrade() -> None:
    for table in ("request_event", "request_answer", "imaging_request"):
        op.drop_table(table)
