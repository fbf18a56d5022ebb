"""The retention API under `/api`: an institution's periods, and holds on its studies.

Periods are administration (`decide(..., ADMINISTER, institution)`); holds are their own action
(`Action.HOLD`: institution administrators, and API tokens of an administrator client with the
`hold` scope, for legal and clinical hold tools). A study is held only by an institution that
holds it (owns it, or holds a live grant on it); any other study answers like a missing one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from sqlalchemy import Engine

from archive.store import Archive
from audit.trail import AuditRecord, record
from exchange.holds import NewHold, get_hold, holders_of, list_holds, place_hold, release_hold
from exchange.retention_defaults import RetentionDefaults
from exchange.retention_models import RetentionHold
from exchange.retention_terms import POLICY_FIELDS, read_policy, set_policy
from exchange.retention_terms import terms_of as effective_terms
from foundation.clock import as_utc
from foundation.errors import NotFound
from policy.decision import Resource
from policy.roles import Action
from portal.admin_access import Access, forbidden
from portal.openapi import Call, Operation
from portal.retention_schemas import (
    HoldIn,
    HoldOut,
    HoldsQuery,
    ReleaseIn,
    RetentionIn,
    RetentionOut,
)


def _archive(call: Call) -> Archive:
    archive: Archive = call.state.archive
    return archive


def _engine(call: Call) -> Engine:
    return _archive(call).engine


def _defaults(call: Call) -> RetentionDefaults:
    defaults: RetentionDefaults = call.state.portal.retention
    return defaults


# --- periods ---------------------------------------------------------------------------------


def _retention_out(call: Call, code: str, institution_pk: int) -> RetentionOut:
    row = read_policy(_engine(call), institution_pk)
    defaults = _defaults(call)
    terms = effective_terms(row, defaults)
    return RetentionOut(
        institution=code,
        **{name: getattr(terms, name) for name in POLICY_FIELDS},
        own=[name for name in POLICY_FIELDS if row and getattr(row, name) is not None],
        default_days=defaults.days,
        ceiling_days=defaults.max_days,
        updated_at=row.updated_at if row else None,
        updated_by=row.updated_by if row else "",
    )


def get_retention(call: Call) -> RetentionOut:
    facts = Access(call).require_code(call.path["code"])
    return _retention_out(call, facts.code, facts.pk)


def set_retention(call: Call) -> RetentionOut:
    access = Access(call)
    facts = access.require_code(call.path["code"])
    body: RetentionIn = call.body
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    set_policy(_engine(call), facts.pk, changes, _defaults(call),
               actor=access.principal.label, now=call.now)  # fmt: skip
    _record(call, "retention-policy", facts.pk, changes=changes)
    return _retention_out(call, facts.code, facts.pk)


# --- holds -----------------------------------------------------------------------------------


def _hold_out(access: Access, hold: RetentionHold, now: datetime) -> HoldOut:
    until = hold.until
    return HoldOut(
        pk=hold.pk or 0,
        institution=access.code_of(hold.institution_pk),
        study_uid=hold.study_instance_uid,
        patient_id=hold.patient_id,
        issuer_of_patient_id=hold.issuer_of_patient_id,
        reason=hold.reason,
        until=until,
        created_at=hold.created_at,
        created_by=hold.created_by,
        released_at=hold.released_at,
        released_by=hold.released_by,
        live=hold.released_at is None and until > now,
    )


def list_institution_holds(call: Call) -> list[HoldOut]:
    access = Access(call)
    facts = access.require_code(call.path["code"], Action.HOLD)
    query: HoldsQuery = call.query
    rows = list_holds(_engine(call), [facts.pk], live_only=not query.all, now=call.now)
    return [_hold_out(access, hold, call.now) for hold in rows]


def _end_of(until: datetime | date) -> datetime:
    if isinstance(until, datetime):
        return as_utc(until)
    return datetime.combine(until, time.max, UTC)


def _require_study(access: Access, institution_pk: int, uid: str) -> None:
    """The institution holds the study and the principal may hold it, or 404 / 403."""
    study = _archive(access.call).read_study_access(uid)
    if study is None or institution_pk not in holders_of(
        study.institution_pk, study.grants, access.call.now
    ):
        raise NotFound(f"no study {uid}")
    resource = Resource.study_from_rows(uid, study.institution_pk, study.grants)
    decision = access.decide_on(resource, Action.HOLD)
    if not decision.allowed:
        access.audit(decision, institution_pk, Action.HOLD.value, study_uid=uid)
        raise forbidden(decision)


def create_hold(call: Call) -> HoldOut:
    access = Access(call)
    facts = access.require_code(call.path["code"], Action.HOLD)
    body: HoldIn = call.body
    if body.study_uid:
        _require_study(access, facts.pk, body.study_uid)
    new = NewHold(facts.pk, body.reason, _end_of(body.until), body.study_uid or "",
                  body.patient_id or "", body.issuer_of_patient_id)  # fmt: skip
    hold = place_hold(_engine(call), new, actor=access.principal.label, now=call.now)
    _record(call, "retention-hold", facts.pk, hold, until=hold.until.isoformat())
    return _hold_out(access, hold, call.now)


def release_institution_hold(call: Call) -> HoldOut:
    access = Access(call)
    facts = access.require_code(call.path["code"], Action.HOLD)
    pk = call.path["hold_pk"]
    try:
        hold = get_hold(_engine(call), pk)
    except NotFound:
        raise NotFound(f"no hold {pk}") from None
    if hold.institution_pk != facts.pk:
        raise NotFound(f"no hold {pk}")
    if hold.released_at is None:
        hold = release_hold(_engine(call), pk, actor=access.principal.label, now=call.now)
        body: ReleaseIn = call.body
        _record(call, "retention-release", facts.pk, hold, why=body.reason)
    return _hold_out(access, hold, call.now)


def _record(
    call: Call,
    action: str,
    institution_pk: int,
    hold: RetentionHold | None = None,
    **detail: object,
) -> None:
    request = call.request
    record(
        _engine(call),
        AuditRecord(
            action=action,
            outcome="allowed",
            actor=call.principal.label,
            actor_kind=call.principal.kind.value,
            institution_pk=institution_pk,
            reason=hold.reason if hold else "",
            study_uid=hold.study_instance_uid if hold else "",
            patient_id=hold.patient_id if hold else "",
            client_address=request.client.host if request.client else "",
            detail={"hold_pk": hold.pk, **detail} if hold else detail,
        ),
    )


_R = "retention"
OPERATIONS: list[Operation] = [
    Operation("GET", "/institutions/{code}/retention", get_retention,
              "the retention periods in force for an institution", _R, response=RetentionOut),
    Operation("PUT", "/institutions/{code}/retention", set_retention,
              "change retention periods (never past the system's ceiling)", _R, RetentionIn,
              RetentionOut),
    Operation("GET", "/institutions/{code}/holds", list_institution_holds,
              "holds in force (all=true: released and ended too)", _R, response=list[HoldOut],
              query=HoldsQuery),
    Operation("POST", "/institutions/{code}/holds", create_hold,
              "keep a study, or a patient's studies, from deletion until a date", _R, HoldIn,
              HoldOut, 201),
    Operation("POST", "/institutions/{code}/holds/{hold_pk}/release", release_institution_hold,
              "end a hold now", _R, ReleaseIn, HoldOut),
]  # fmt: skip
