"""Reading who holds each study, and since when, from the index, grants and transfers.

A study's owner holds it from its arrival (`study.created_at`, kind "upload"); each live grant
holds it from `granted_at`, of kind "node" when the transfer that gave it went to a node, else
"worklist". Studies are read in batches in primary-key order, so a sweep's memory is bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, Table, or_, select

from archive.models import Patient, Study, StudyGrant
from exchange.models import Transfer
from exchange.retention_models import HoldingKind
from foundation.grants import live_grant_clause
from retention.rules import Holding, StudyHoldings

STUDY: Table = Study.__table__  # type: ignore[attr-defined]
PATIENT: Table = Patient.__table__  # type: ignore[attr-defined]
GRANT: Table = StudyGrant.__table__  # type: ignore[attr-defined]
TRANSFER: Table = Transfer.__table__  # type: ignore[attr-defined]
_TRANSFER_REASON = "transfer "  # exchange.sending and exchange.routing write "transfer {pk}"


def _transfer_pk(reason: str) -> int | None:
    number = reason.removeprefix(_TRANSFER_REASON)
    return int(number) if reason.startswith(_TRANSFER_REASON) and number.isdecimal() else None


def iter_study_holdings(
    engine: Engine, now: datetime, *, batch: int = 200, institution_pk: int | None = None
) -> Iterator[list[StudyHoldings]]:
    """Every study with its holdings, `batch` at a time; with `institution_pk`, only the
    studies that institution holds (owns or holds a live grant on)."""
    after = 0
    while True:
        rows = _studies(engine, now, after, batch, institution_pk)
        if not rows:
            return
        yield _with_grants(engine, now, rows)
        after = rows[-1][0]


def _studies(
    engine: Engine, now: datetime, after: int, batch: int, institution_pk: int | None
) -> list[Row[Any]]:
    query = (
        select(
            STUDY.c.pk,
            STUDY.c.study_instance_uid,
            STUDY.c.institution_pk,
            STUDY.c.created_at,
            PATIENT.c.patient_id,
            PATIENT.c.issuer_of_patient_id,
        )
        .join(PATIENT, PATIENT.c.pk == STUDY.c.patient_pk)
        .where(STUDY.c.pk > after)
        .order_by(STUDY.c.pk)
        .limit(batch)
    )
    if institution_pk is not None:
        granted = select(GRANT.c.study_pk).where(
            GRANT.c.institution_pk == institution_pk,
            live_grant_clause(GRANT.c.expires_at, GRANT.c.revoked_at, now),
        )
        query = query.where(or_(STUDY.c.institution_pk == institution_pk, STUDY.c.pk.in_(granted)))
    with engine.connect() as connection:
        return list(connection.execute(query))


def _with_grants(engine: Engine, now: datetime, rows: list[Row[Any]]) -> list[StudyHoldings]:
    pks = [row.pk for row in rows]
    grants = (
        select(
            GRANT.c.pk,
            GRANT.c.study_pk,
            GRANT.c.institution_pk,
            GRANT.c.granted_at,
            GRANT.c.reason,
        )
        .where(
            GRANT.c.study_pk.in_(pks),
            live_grant_clause(GRANT.c.expires_at, GRANT.c.revoked_at, now),
        )
        .order_by(GRANT.c.pk)
    )
    with engine.connect() as connection:
        found = connection.execute(grants).all()
        transfer_pks = {pk for row in found if (pk := _transfer_pk(row.reason)) is not None}
        to_nodes = set(
            connection.execute(
                select(TRANSFER.c.pk).where(
                    TRANSFER.c.pk.in_(transfer_pks), TRANSFER.c.destination_node_pk.is_not(None)
                )
            ).scalars()
        )
    by_study: dict[int, list[Holding]] = {pk: [] for pk in pks}
    for row in found:
        transfer = _transfer_pk(row.reason)
        kind = HoldingKind.NODE if transfer in to_nodes else HoldingKind.WORKLIST
        holding = Holding(row.institution_pk, kind, row.granted_at, row.pk, transfer)
        by_study[row.study_pk].append(holding)
    return [
        StudyHoldings(
            row.study_instance_uid,
            row.patient_id,
            row.issuer_of_patient_id,
            (Holding(row.institution_pk, HoldingKind.UPLOAD, row.created_at), *by_study[row.pk]),
            row.pk,
        )
        for row in rows
    ]
