"""Who may administer what, decided by `policy.decide` and enforced at the admin API's edge.

Every check asks `decide(principal, ADMINISTER, Resource.institution(pk), ...)`. An institution
the caller has no tie to answers exactly like one that does not exist (404), so the API never
tells an administrator of one institution what another has; a refusal where the caller can
already see the institution answers 403 with the decision's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request

from audit.trail import AuditRecord, record
from foundation.errors import NotFound
from policy import store
from policy.authentication import Credentials
from policy.decision import (
    AccountFacts,
    Context,
    Decision,
    InstitutionFacts,
    PolicySnapshot,
    Resource,
    decide,
)
from policy.models import User
from policy.principal import Principal, PrincipalKind
from policy.roles import Action
from policy.store import snapshot
from portal.openapi import Call

# No institution has pk 0: only the system-administrator rule can allow ADMINISTER on it, which
# is what creating top-level institutions and system users needs.
SYSTEM = 0


async def authenticate(request: Request) -> Principal:
    """The principal the request's bearer token, API token or session cookie proves."""
    credentials = Credentials.from_request(request.method, request.headers, request.cookies)
    authenticator = request.app.state.authenticator
    now = datetime.now(UTC)
    principal: Principal = await anyio.to_thread.run_sync(
        authenticator.authenticate, credentials, now
    )
    return principal


def forbidden(decision: Decision) -> HTTPException:
    return HTTPException(403, decision.reason)


@dataclass
class Access:
    """One request's view of the policy: the snapshot is read once, on first use."""

    call: Call

    @cached_property
    def snapshot(self) -> PolicySnapshot:
        return snapshot(self.call.state.archive.engine)

    @property
    def principal(self) -> Principal:
        return self.call.principal

    @property
    def user_pk(self) -> int | None:
        return self.principal.id if self.principal.kind is PrincipalKind.USER else None

    def decide(self, institution_pk: int, action: Action = Action.ADMINISTER) -> Decision:
        return self.decide_on(Resource.institution(institution_pk), action)

    def decide_on(self, resource: Resource, action: Action = Action.ADMINISTER) -> Decision:
        context = Context(
            self.call.now, self.call.request.client.host if self.call.request.client else ""
        )
        return decide(self.principal, action, resource, context, self.snapshot)

    def administered(self) -> frozenset[int]:
        """Every institution this principal may administer."""
        return frozenset(pk for pk in self.snapshot.institutions if self.decide(pk).allowed)

    def is_system(self) -> Decision:
        return self.decide(SYSTEM)

    def oversight_scope(self, code: str | None) -> frozenset[int] | None:
        """What an administrators' list covers: one institution's (refused with 403/404 like
        the rest), else every one administered; None for a system administrator: all."""
        if code is not None:
            return frozenset({self.require_code(code).pk})
        if self.is_system().allowed:
            return None
        return self.administered()

    def audit(
        self,
        decision: Decision,
        institution_pk: int | None,
        action: str = Action.ADMINISTER.value,
        **detail: object,
    ) -> None:
        """Refusals always; allowed administration when it changes something. Reading
        oversight (`audit`), by GET or by a posted search, is recorded by the reading itself,
        once its criteria are found good (`portal.oversight_api.audit_reading`)."""
        request = self.call.request
        if decision.allowed and (request.method in {"GET", "HEAD"} or action == Action.AUDIT):
            return
        record(
            self.call.state.archive.engine,
            AuditRecord(
                action=action,
                outcome="allowed" if decision.allowed else "denied",
                actor=self.principal.label,
                actor_kind=self.principal.kind.value,
                institution_pk=institution_pk or None,
                rule=decision.rule,
                reason=decision.reason,
                client_address=request.client.host if request.client else "",
                detail={"method": request.method, "path": request.url.path, **detail},
            ),
        )

    def require_system(self) -> None:
        decision = self.is_system()
        self.audit(decision, None)
        if not decision.allowed:
            raise HTTPException(403, "only a system administrator may do this")

    def _related(self, institution_pk: int) -> bool:
        """Whether the principal already knows the institution exists (a tie by membership)."""
        facts = self.snapshot.institutions.get(institution_pk)
        if facts is None:
            return False
        ties = {institution_pk, facts.parent_pk}
        return any(pk in self.principal.memberships for pk in ties if pk is not None)

    def require(
        self, institution_pk: int | None, label: str = "", action: Action = Action.ADMINISTER
    ) -> InstitutionFacts:
        """The institution if the principal may `action` for it (administer, unless said
        otherwise); 404 or 403 otherwise."""
        facts = self.snapshot.institutions.get(institution_pk or -1)
        if facts is None or institution_pk is None:
            raise NotFound(f"no {label or 'institution'}")
        decision = self.decide(institution_pk, action)
        self.audit(decision, institution_pk, action.value)
        if decision.allowed:
            return facts
        if self._related(institution_pk):
            raise forbidden(decision)
        raise NotFound(f"no {label or f'institution {facts.code!r}'}")

    def require_code(self, code: str, action: Action = Action.ADMINISTER) -> InstitutionFacts:
        for facts in self.snapshot.institutions.values():
            if facts.code == code:
                return self.require(facts.pk, f"institution {code!r}", action)
        raise NotFound(f"no institution {code!r}")

    def code_of(self, institution_pk: int) -> str:
        facts = self.snapshot.institutions.get(institution_pk)
        return facts.code if facts else ""

    def pk_of(self, code: str) -> int | None:
        """Any institution's pk by code: codes are how institutions name each other."""
        return next((f.pk for f in self.snapshot.institutions.values() if f.code == code), None)

    def account(self, user: User) -> AccountFacts:
        """What the rules on accounts need to know of a person."""
        theirs = store.load_memberships(self.call.state.archive.engine, user.pk or 0)
        return AccountFacts(user.pk or 0, user.system_admin, frozenset(theirs))

    def require_account(self, facts: AccountFacts, membership_in: int | None = None) -> Decision:
        """The account itself (or its membership in an institution) may be changed, or 403."""
        decision = self.decide_on(Resource.account_of(facts, membership_in))
        self.audit(decision, membership_in, target_user=facts.user_pk)
        if not decision.allowed:
            raise forbidden(decision)
        return decision

    def require_access(self, institution_pk: int) -> None:
        """After `require`: the principal may also open a new way into it, or 403 (audited)."""
        decision = self.decide_on(Resource.access_to(institution_pk))
        if not decision.allowed:
            self.audit(decision, institution_pk)
            raise forbidden(decision)
