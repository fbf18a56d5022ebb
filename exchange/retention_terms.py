"""Retention periods: the system's defaults and ceiling, each institution's own, read and set.

A holding is due `days` after it arrived, where `days` is the institution's period for that
kind of holding (worklist, node, upload), or the system default, and never more than the
system-wide ceiling that the system administrator sets (`FERRY_RETENTION_MAX_DAYS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil

from sqlalchemy import Engine
from sqlmodel import Session, select

from exchange.retention_defaults import DEFAULT_DAYS, DEFAULT_WARN_DAYS, RetentionDefaults
from exchange.retention_models import HoldingKind, RetentionPolicy
from policy.store import InvalidRecord

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Terms:
    """One institution's effective periods (ceiling applied) and its warning lead."""

    worklist_days: int = DEFAULT_DAYS
    node_days: int = DEFAULT_DAYS
    upload_days: int = DEFAULT_DAYS
    warn_days: int = DEFAULT_WARN_DAYS

    def days(self, kind: HoldingKind) -> int:
        return {
            HoldingKind.WORKLIST: self.worklist_days,
            HoldingKind.NODE: self.node_days,
            HoldingKind.UPLOAD: self.upload_days,
        }[kind]

    def due_at(self, kind: HoldingKind, arrived_at: datetime) -> datetime:
        return arrived_at + self.days(kind) * _DAY

    def warn_at(self, kind: HoldingKind, arrived_at: datetime) -> datetime:
        return self.due_at(kind, arrived_at) - self.warn_days * _DAY


def days_left(due_at: datetime, now: datetime) -> int:
    """Whole days left before `due_at`, rounded up (due tomorrow morning: 1); never below 0."""
    return max(0, ceil((due_at - now) / _DAY))


def terms_of(row: RetentionPolicy | None, defaults: RetentionDefaults) -> Terms:
    def days(value: int | None) -> int:
        return min(value if value is not None else defaults.days, defaults.max_days)

    if row is None:
        return terms_of(RetentionPolicy(institution_pk=0, updated_at=datetime.min), defaults)
    warn = row.warn_days if row.warn_days is not None else defaults.warn_days
    return Terms(days(row.worklist_days), days(row.node_days), days(row.upload_days), warn)


def read_terms(engine: Engine, defaults: RetentionDefaults) -> dict[int, Terms]:
    """Every institution with its own policy; others take `terms_of(None, defaults)`."""
    with Session(engine) as session:
        rows = session.exec(select(RetentionPolicy)).all()
    return {row.institution_pk: terms_of(row, defaults) for row in rows}


def read_policy(engine: Engine, institution_pk: int) -> RetentionPolicy | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(RetentionPolicy, institution_pk)


POLICY_FIELDS = ("worklist_days", "node_days", "upload_days", "warn_days")


def check_changes(changes: Mapping[str, int | None], defaults: RetentionDefaults) -> None:
    """InvalidRecord naming the field: periods 1..ceiling days, a warning 0..ceiling days."""
    for name, value in changes.items():
        if name not in POLICY_FIELDS:
            raise InvalidRecord(f"{name} is not a retention setting")
        if value is None:
            continue
        low = 0 if name == "warn_days" else 1
        if not low <= value <= defaults.max_days:
            raise InvalidRecord(
                f"{name} must be between {low} and {defaults.max_days} days (the system's "
                f"ceiling), not {value}"
            )


def set_policy(
    engine: Engine,
    institution_pk: int,
    changes: Mapping[str, int | None],
    defaults: RetentionDefaults,
    *,
    actor: str,
    now: datetime,
) -> RetentionPolicy:
    """Changes the named fields (None: back to the default); the others stay."""
    check_changes(changes, defaults)
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(RetentionPolicy, institution_pk)
        if row is None:
            row = RetentionPolicy(institution_pk=institution_pk, updated_at=now)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at, row.updated_by = now, actor[:256]
        session.add(row)
        session.commit()
        return row
