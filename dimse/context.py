"""What every DIMSE service handler needs: configuration, archive, clock, jobs, decide and audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archive.store import Archive, StudyAccess
from audit.trail import AuditRecord, record
from dimse.callers import Caller
from dimse.config import DimseConfig
from foundation.clock import Clock, utc_now
from foundation.jobs import JobQueue
from policy.decision import Context, Decision, PolicySnapshot, Resource, decide
from policy.roles import Action
from policy.store import snapshot


@dataclass
class BridgeContext:
    config: DimseConfig
    archive: Archive
    clock: Clock = utc_now
    jobs: JobQueue = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = JobQueue(self.archive.engine, self.clock)

    @property
    def engine(self) -> Any:
        return self.archive.engine

    def snapshot(self) -> PolicySnapshot:
        return snapshot(self.engine)

    def decide(
        self,
        caller: Caller,
        action: Action,
        resource: Resource,
        policy: PolicySnapshot | None = None,
    ) -> Decision:
        return decide(
            caller.principal, action, resource, Context(self.clock(), caller.address), policy
        )

    def decide_study(self, caller: Caller, action: Action, access: StudyAccess) -> Decision:
        resource = Resource.study_from_rows(
            access.study_instance_uid, access.institution_pk, access.grants
        )
        return self.decide(caller, action, resource)

    def audit(
        self, caller: Caller, action: Action | str, decision: Decision, **options: Any
    ) -> None:
        """One audit event for a DIMSE operation (options as for `audit_record`)."""
        record(self.engine, self.audit_record(caller, action, decision, **options))

    def audit_record(
        self,
        caller: Caller,
        action: Action | str,
        decision: Decision,
        *,
        access: StudyAccess | None = None,
        outcome: str | None = None,
        study_uid: str = "",
        institution_pk: int | None = None,
        **detail: Any,
    ) -> AuditRecord:
        """The event's fields; the detail names the AE titles."""
        name = action.value if isinstance(action, Action) else action
        owner = access.institution_pk if access else None
        return AuditRecord(
            action=name,
            outcome=outcome or ("allowed" if decision.allowed else "denied"),
            actor=caller.label,
            actor_kind=caller.principal.kind.value if caller.node else "ae",
            institution_pk=institution_pk if institution_pk is not None else owner,
            rule=decision.rule,
            reason=decision.reason,
            study_uid=study_uid or (access.study_instance_uid if access else ""),
            patient_id=access.patient_id if access else "",
            accession_number=access.accession_number if access else "",
            client_address=caller.address,
            detail={
                "protocol": "dimse",
                "calling_ae": caller.calling_ae_title,
                "called_ae": caller.called_ae_title,
                **detail,
            },
        )
