"""The System Audit Trail as one institution may see it: events about its own.

An institution's administrators and auditors see the events
- recorded as the institution's (its administration, its transfers as sender, its studies'
  access decided for it),
- of its transactions: the transfers it sent or received and the requests it made or was asked,
  whoever acted (so the sender sees the receiver's downloads and views),
- about its studies (those it owns), whoever acted,
- of its people (users who are its members) and its nodes, when the event is tied to no
  institution (signing in) or is about a study granted to it.

Everything else (another institution's studies, people and transfers) stays out, as a condition
on the audit table that the database applies (`audit.search.AuditQuery.within`): counts and pages
see only what may be seen. API clients are left to the first three: their names are not unique
across institutions. A study deleted since (retention) keeps its events under the first two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import ColumnElement, and_, literal, or_, select, union

from audit.search import AuditEntry
from exchange.models import TransferStatus
from exchange.oversight._tables import (
    AUDIT_EVENT,
    MEMBERSHIP,
    NODE,
    REQUEST,
    STUDY,
    STUDY_GRANT,
    TRANSFER,
    USER,
)

CSV_HEADER = (
    "pk", "at", "actor", "actor_kind", "institution", "action", "outcome", "rule", "reason",
    "study_uid", "patient_id", "accession_number", "transaction", "client_address", "detail",
    "hash",
)  # fmt: skip


def as_row(entry: AuditEntry, codes: Mapping[int, str]) -> Sequence[object]:
    """One event as a CSV row, its institution by code (`codes`: pk to code)."""
    return (
        entry.pk, entry.at, entry.actor, entry.actor_kind, codes.get(entry.institution_pk or 0, ""),
        entry.action, entry.outcome, entry.rule, entry.reason, entry.study_uid, entry.patient_id,
        entry.accession_number, entry.transaction, entry.client_address, entry.detail, entry.hash,
    )  # fmt: skip


def visible_to(institution_pk: int) -> ColumnElement[bool]:
    """The condition on `audit_event` of what institution `institution_pk` may see."""
    event = AUDIT_EVENT.c
    t, r = TRANSFER.c, REQUEST.c
    me = institution_pk
    transactions = union(
        select(t.public_id).where(
            or_(
                t.sender_institution_pk == me,
                and_(t.destination_institution_pk == me, t.status != TransferStatus.DRAFT.value),
            )
        ),
        select(r.public_id).where(
            or_(r.requesting_institution_pk == me, r.asked_institution_pk == me)
        ),
    )
    study, grant = STUDY.c, STUDY_GRANT.c
    owned = select(study.study_instance_uid).where(study.institution_pk == me)
    granted = (
        select(study.study_instance_uid)
        .join(STUDY_GRANT, grant.study_pk == study.pk)
        .where(grant.institution_pk == me)
    )
    people = union(
        select(literal("user:") + USER.c.email)
        .join(MEMBERSHIP, MEMBERSHIP.c.user_pk == USER.c.pk)
        .where(MEMBERSHIP.c.institution_pk == me),
        select(literal("node:") + NODE.c.ae_title).where(NODE.c.institution_pk == me),
    )
    ours = event.actor.in_(people)
    return or_(
        event.institution_pk == me,
        and_(event.transaction != "", event.transaction.in_(transactions)),
        and_(event.study_uid != "", event.study_uid.in_(owned)),
        and_(ours, event.institution_pk.is_(None)),
        and_(ours, event.study_uid != "", event.study_uid.in_(granted)),
    )
