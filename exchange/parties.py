"""Who may see and act on a transfer: its sending and receiving institutions, and the audit of it.

A transfer is found by its opaque id. To anyone who is no party to it (no membership with the
action in the sending or the receiving institution) it answers exactly like a transfer that does
not exist: guessing ids tells nothing. A party refused an action gets the policy's reason.
Every step is audited once per study, with the transfer's opaque id as the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from archive.models import Patient, Study
from audit.trail import AuditRecord, record
from exchange.models import Transfer, TransferStudy
from foundation.errors import Forbidden, NotFound
from policy.decision import RECEIVER_SIDE, SENDER_SIDE, Context, Decision, Resource, decide
from policy.explain import user_principal
from policy.principal import Principal, PrincipalKind
from policy.roles import Action, Role, Scope


class TransferNotFound(NotFound):
    pass


@dataclass(frozen=True)
class StudyFacts:
    """What the audit trail and the worklist name a study by."""

    study_uid: str
    patient_id: str = ""
    accession_number: str = ""


@dataclass(frozen=True)
class Actor:
    """Who acts, when, from where: the principal with the request's context."""

    principal: Principal
    now: datetime
    client_address: str = ""
    protocol: str = "api"

    @property
    def label(self) -> str:
        return self.principal.label

    @property
    def user_pk(self) -> int | None:
        """The person's user, when a person acts (not an API client or Ferry itself)."""
        return self.principal.id if self.principal.kind is PrincipalKind.USER else None

    @property
    def context(self) -> Context:
        return Context(self.now, self.client_address)


def principal_payload(principal: Principal) -> dict[str, Any]:
    """The principal as a job's payload keeps it (`principal_from_payload` reads it back)."""
    return {
        "kind": principal.kind.value,
        "id": principal.id,
        "name": principal.name,
        "memberships": {str(k): sorted(v) for k, v in principal.memberships.items()},
        "system_admin": principal.system_admin,
        "scopes": sorted(principal.scopes) if principal.scopes is not None else None,
    }


def principal_from_payload(engine: Engine, data: Mapping[str, Any]) -> Principal:
    """A person as they are now (memberships read again); a tool as it was when it asked."""
    kind = PrincipalKind(data["kind"])
    if kind is PrincipalKind.USER:
        return user_principal(engine, str(data["name"]))
    scopes = data.get("scopes")
    return Principal(
        kind, data.get("id"), str(data["name"]),
        {int(k): frozenset(Role(r) for r in v) for k, v in data["memberships"].items()},
        bool(data.get("system_admin")),
        frozenset(Scope(s) for s in scopes) if scopes is not None else None,
    )  # fmt: skip


def actor_payload(actor: Actor) -> dict[str, Any]:
    """Who a job acts for, as its payload keeps it (`actor_from_payload` reads it back)."""
    return {"actor": principal_payload(actor.principal), "client_address": actor.client_address}


def actor_from_payload(engine: Engine, payload: Mapping[str, Any], now: datetime) -> Actor:
    principal = principal_from_payload(engine, payload["actor"])
    return Actor(principal, now, str(payload.get("client_address", "")), "job")


def study_uids(session: Session, transfer: Transfer) -> list[str]:
    """A person's transfer lists its studies; a pushed one has its one study on the row."""
    rows = session.exec(
        select(TransferStudy.study_instance_uid)
        .where(TransferStudy.transfer_pk == transfer.pk)
        .order_by(col(TransferStudy.pk))
    ).all()
    if rows:
        return list(rows)
    return [transfer.study_instance_uid] if transfer.study_instance_uid else []


def study_facts(session: Session, uids: Iterable[str]) -> list[StudyFacts]:
    """In the order given; a study no longer in the archive keeps only its UID."""
    wanted = list(uids)
    found = {
        uid: StudyFacts(uid, patient_id, accession)
        for uid, patient_id, accession in session.exec(
            select(Study.study_instance_uid, Patient.patient_id, Study.accession_number)
            .join(Patient, col(Patient.pk) == col(Study.patient_pk))
            .where(col(Study.study_instance_uid).in_(wanted))
        )
    }
    return [found.get(uid, StudyFacts(uid)) for uid in wanted]


def load_transfer(engine: Engine, public_id: str) -> Transfer:
    with Session(engine, expire_on_commit=False) as session:
        transfer = session.exec(select(Transfer).where(Transfer.public_id == public_id)).first()
    if transfer is None:
        raise TransferNotFound(f"no transfer {public_id[:40]!r}")
    return transfer


def decide_on(actor: Actor, action: Action, transfer: Transfer) -> Decision:
    resource = Resource.transfer(
        transfer.sender_institution_pk, transfer.destination_institution_pk
    )
    return decide(actor.principal, action, resource, actor.context)


def side_of(decision: Decision) -> str:
    if SENDER_SIDE in decision.obligations:
        return "sender"
    return "receiver" if RECEIVER_SIDE in decision.obligations else ""


def is_party(actor: Actor, transfer: Transfer) -> bool:
    """Whether the principal has any tie to the transfer at all (then refusals say why)."""
    pks = {transfer.sender_institution_pk, transfer.destination_institution_pk}
    return actor.principal.studies is None and bool(pks & set(actor.principal.memberships))


def require(
    engine: Engine, actor: Actor, action: Action, public_id: str, side: str | None = None
) -> Transfer:
    """The transfer if the actor may do `action` on it (from `side`, if given); else refuse."""
    transfer = load_transfer(engine, public_id)
    decision = decide_on(actor, action, transfer)
    if decision.allowed and side is not None and side_of(decision) != side:
        decision = _wrong_side(actor, action, transfer, side)
    if decision.allowed:
        return transfer
    audit_step(engine, actor, transfer, action.value, decision)
    if not is_party(actor, transfer):
        raise TransferNotFound(f"no transfer {public_id[:40]!r}")
    raise Forbidden(decision.reason)


def allows(actor: Actor, action: Action, sender_pk: int, receiver_pk: int, side: str) -> bool:
    """What `require` would let through from `side`, without auditing: which buttons to show."""
    resource = Resource.transfer(sender_pk, receiver_pk)
    decision = decide(actor.principal, action, resource, actor.context)
    if decision.allowed and side_of(decision) != side:
        pk = sender_pk if side == "sender" else receiver_pk
        decision = _side_decision(actor, action, pk, side)
    return decision.allowed


def _wrong_side(actor: Actor, action: Action, transfer: Transfer, side: str) -> Decision:
    pk = transfer.sender_institution_pk if side == "sender" else transfer.destination_institution_pk
    return _side_decision(actor, action, pk, side)


def _side_decision(actor: Actor, action: Action, pk: int, side: str) -> Decision:
    if pk in actor.principal.memberships and action in actor.principal.actions_in(pk):
        return Decision(True, "transfer-party", f"allowed for the {side}")
    return Decision(False, "transfer-side", f"only the {side}'s institution may do this")


def visible_to(principal: Principal, action: Action) -> Any:
    """SQL condition: transfers the principal may `action` as sender or receiver."""
    pks = list(principal.institutions_for(action)) if principal.studies is None else []
    return or_(
        col(Transfer.sender_institution_pk).in_(pks),
        col(Transfer.destination_institution_pk).in_(pks),
    )


def audit_step(
    engine: Engine,
    actor: Actor,
    transfer: Transfer,
    action: str,
    decision: Decision,
    *,
    outcome: str | None = None,
    studies: Sequence[str] | None = None,
    **detail: Any,
) -> None:
    """One audit event per study of the transfer (or of `studies`); none at all gets one event."""
    with Session(engine) as session:
        uids = study_uids(session, transfer) if studies is None else list(studies)
        facts = study_facts(session, uids) or [StudyFacts("")]
    for study in facts:
        record(
            engine,
            AuditRecord(
                action=action,
                outcome=outcome or ("allowed" if decision.allowed else "denied"),
                actor=actor.label,
                actor_kind=actor.principal.kind.value,
                institution_pk=transfer.sender_institution_pk,
                rule=decision.rule,
                reason=decision.reason,
                study_uid=study.study_uid,
                patient_id=study.patient_id,
                accession_number=study.accession_number,
                transaction=transfer.public_id,
                client_address=actor.client_address,
                detail={
                    "protocol": actor.protocol,
                    "status": transfer.status,
                    "destination_institution": transfer.destination_institution_pk,
                    **detail,
                },
            ),
        )
