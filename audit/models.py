"""Audit trail tables: one append-only row per event, and the head of the hash chain.

`audit_event.pk` is the event's position in the chain, assigned by the appender under the chain
lock (head pk + 1), never by a sequence: a sequence skips numbers on rollback, and a gap must
mean a deleted row. `audit_chain_head` is a single row (pk 1) naming the last event and its
hash; appenders lock it, so it is also what serialises concurrent writers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, String, Text
from sqlmodel import Field, SQLModel

GENESIS_HASH = "0" * 64  # the prev_hash of the first event
HEAD_PK = 1


class Outcome(StrEnum):
    ALLOWED = "allowed"  # the action was permitted and done
    DENIED = "denied"  # policy refused it
    FAILED = "failed"  # permitted, but it did not complete


class AuditEvent(SQLModel, table=True):
    """One thing that happened, who did it, to which patient and study, and what came of it."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_at", "at"),
        Index("ix_audit_event_patient_id", "patient_id"),
        Index("ix_audit_event_study_uid", "study_uid"),
        Index("ix_audit_event_accession_number", "accession_number"),
        Index("ix_audit_event_transaction", "transaction"),
        Index("ix_audit_event_actor", "actor"),
        Index("ix_audit_event_action_at", "action", "at"),
    )

    pk: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime
    actor: str = Field(default="", max_length=320)
    actor_kind: str = Field(default="", max_length=32)
    institution_pk: int | None = Field(default=None)
    action: str = Field(max_length=64)
    outcome: str = Field(max_length=16)
    rule: str = Field(default="", max_length=256)
    reason: str = Field(default="", max_length=1024)
    study_uid: str = Field(default="", max_length=64)
    patient_id: str = Field(default="", max_length=64)
    accession_number: str = Field(default="", max_length=64)
    transaction: str = Field(default="", max_length=128)
    client_address: str = Field(default="", max_length=64)
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditEventInstitution(SQLModel, table=True):
    """The institutions an event concerns beyond its own `institution_pk`: the person's
    institutions when they signed in. Written with the event, in the same transaction; the
    event's hashed `detail` names them too (`institutions`), so the chain covers them."""

    __tablename__ = "audit_event_institution"

    institution_pk: int = Field(primary_key=True)
    event_pk: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))


class AuditChainHead(SQLModel, table=True):
    """The last event of the chain; locked by every append, read by `chain_head()`."""

    __tablename__ = "audit_chain_head"

    pk: int = Field(default=HEAD_PK, primary_key=True)
    last_pk: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_hash: str = Field(default=GENESIS_HASH, max_length=64)
    # Where the chain starts after its oldest events were pruned (`audit.prune`): the last
    # pruned event's pk and hash; 0 and the genesis hash while nothing was pruned.
    pruned_pk: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, default=0, server_default="0")
    )
    pruned_hash: str = Field(
        default=GENESIS_HASH,
        sa_column=Column(
            String(64), nullable=False, default=GENESIS_HASH, server_default=GENESIS_HASH
        ),
    )


class AuditShipping(SQLModel, table=True):
    """How far the trail has reached the audit record repository (one row), and who ships it.

    `last_pk` moves only after a batch was delivered; `locked_by`/`locked_until` is a lease, so
    that one process at a time ships, however many workers run.
    """

    __tablename__ = "audit_shipping"

    pk: int = Field(default=HEAD_PK, primary_key=True)
    last_pk: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    destination: str = Field(default="", max_length=512)
    locked_by: str = Field(default="", max_length=128)
    locked_until: datetime | None = Field(default=None)
    last_error: str = Field(default="", max_length=1024)
    updated_at: datetime | None = Field(default=None)
