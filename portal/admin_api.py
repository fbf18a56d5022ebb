"""The admin JSON API under `/api`: institutions, users, memberships, registrations, API clients.

Nodes, destination rules, hours, holidays and grants are in `portal.destinations_api`; both lists
of operations are mounted together, with the OpenAPI document generated from them.
"""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine
from starlette.exceptions import HTTPException
from starlette.routing import Mount

from audit.trail import AuditRecord, record
from exchange.notifications import EventKind, on_registration
from foundation.errors import NotFound
from policy import store
from policy.decision import Decision, Resource
from policy.models import ApiClient, Invitation, Registration, User, UserStatus
from portal import (
    destinations_api,
    explain_api,
    jobs_api,
    node_transfers_api,
    notifications_api,
    oversight_api,
    profiles_api,
    receiving_api,
    requests_api,
    retention_api,
)
from portal.admin_access import Access, authenticate
from portal.api_schemas import (
    ApiClientIn,
    ApiClientOut,
    ApiTokenOut,
    InstitutionIn,
    InstitutionOut,
    InstitutionPatch,
    InvitationAnswerIn,
    InvitationOut,
    MembershipAnswer,
    MembershipIn,
    MembershipOut,
    RegistrationAccepted,
    RegistrationIn,
    RegistrationOut,
    RegistrationQuery,
    RejectIn,
    RolesIn,
    SecurityInstitutionIn,
    TokenCreated,
    TokenIn,
    UserIn,
    UserOut,
    UserPatch,
)
from portal.openapi import Call, Operation, PathParameter, build_routes

log = logging.getLogger(__name__)

API_PREFIX = "/api"
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_TOKEN_ID = re.compile(r"^[0-9a-f]{1,32}$")
_PROFILE = re.compile(r"^[^\s/][^/]{0,63}$")


def _engine(call: Call) -> Engine:
    engine: Engine = call.state.archive.engine
    return engine


# --- institutions and security institutions -------------------------------------------------


def list_institutions(call: Call) -> list[InstitutionOut]:
    pks = Access(call).administered()
    return [InstitutionOut.model_validate(i) for i in store.list_institutions(_engine(call), pks)]


def create_institution(call: Call) -> InstitutionOut:
    Access(call).require_system()
    body: InstitutionIn = call.body
    created = store.create_institution(_engine(call), **body.model_dump())
    return InstitutionOut.model_validate(created)


def get_institution(call: Call) -> InstitutionOut:
    facts = Access(call).require_code(call.path["code"])
    return InstitutionOut.model_validate(store.get_institution(_engine(call), facts.pk))


def update_institution(call: Call) -> InstitutionOut:
    facts = Access(call).require_code(call.path["code"])
    changes = call.body.model_dump(exclude_none=True)
    return InstitutionOut.model_validate(
        store.update_institution(_engine(call), facts.pk, **changes)
    )


def list_security_institutions(call: Call) -> list[InstitutionOut]:
    facts = Access(call).require_code(call.path["code"])
    rows = store.security_institutions(_engine(call), facts.pk)
    return [InstitutionOut.model_validate(row) for row in rows]


def create_security_institution(call: Call) -> InstitutionOut:
    facts = Access(call).require_code(call.path["code"])
    body: SecurityInstitutionIn = call.body
    fields = body.model_dump()
    fields["timezone"] = body.timezone or facts.hours.timezone
    created = store.create_institution(_engine(call), parent_pk=facts.pk, **fields)
    return InstitutionOut.model_validate(created)


# --- users and memberships ------------------------------------------------------------------


def _membership_out(access: Access, user: User, institution_pk: int, roles: str) -> MembershipOut:
    return MembershipOut(
        user_pk=user.pk or 0,
        institution_pk=institution_pk,
        institution=access.code_of(institution_pk),
        email=user.email,
        roles=[role for role in roles.split(",") if role],  # type: ignore[misc]
    )


def _user_out(access: Access, user: User, visible: frozenset[int]) -> UserOut:
    memberships = store.list_memberships(_engine(access.call), user_pk=user.pk)
    return UserOut(
        pk=user.pk or 0,
        email=user.email,
        name=user.name,
        status=user.status,
        system_admin=user.system_admin,
        created_at=user.created_at,
        memberships=[
            _membership_out(access, user, m.institution_pk, m.roles)
            for m in memberships
            if m.institution_pk in visible
        ],
    )


def _visible_user(access: Access, user_pk: int) -> tuple[User, list[int]]:
    """The user and their institutions, if the caller administers one of them (or everything)."""
    engine = _engine(access.call)
    try:
        user = store.get_user(engine, user_pk)
    except store.UnknownRecord:
        raise NotFound(f"no user {user_pk}") from None
    theirs = [m.institution_pk for m in store.list_memberships(engine, user_pk=user_pk)]
    if access.is_system().allowed or set(theirs) & access.administered():
        return user, theirs
    raise NotFound(f"no user {user_pk}")


def list_users(call: Call) -> list[UserOut]:
    access = Access(call)
    administered = access.administered()
    scope = None if access.is_system().allowed else administered
    users = store.list_users(_engine(call), scope)
    return [_user_out(access, user, administered) for user in users]


def create_user(call: Call) -> UserOut:
    """A system user needs a system administrator; a member, one who may let people in there."""
    access = Access(call)
    body: UserIn = call.body
    institution_pk = None
    if body.system_admin or body.institution is None:
        access.require_system()
    if body.institution is not None:
        institution_pk = access.require_code(body.institution).pk
        access.require_access(institution_pk)
        if not body.roles:
            raise store.InvalidRecord("a member needs at least one role")
    engine = _engine(call)
    user = store.create_user(
        engine, body.email, name=body.name, password=body.password, system_admin=body.system_admin
    )
    if institution_pk is not None:
        store.set_membership(engine, user.pk or 0, institution_pk, [r.value for r in body.roles])
    return _user_out(access, user, access.administered())


def get_user(call: Call) -> UserOut:
    access = Access(call)
    user, _ = _visible_user(access, call.path["user_pk"])
    return _user_out(access, user, access.administered())


def update_user(call: Call) -> UserOut:
    """An account spans institutions: changing it needs every one of them (or the system);
    a system administrator's account needs a system administrator (`decide`, rules on accounts)."""
    access = Access(call)
    user, _ = _visible_user(access, call.path["user_pk"])
    body: UserPatch = call.body
    if body.system_admin is not None:
        access.require_system()
    if user.pk == access.user_pk and (
        body.status not in (None, UserStatus.ACTIVE) or body.system_admin is False
    ):
        raise HTTPException(403, "you cannot disable your own account or administration")
    access.require_account(access.account(user))
    changed = store.update_user(_engine(call), user.pk or 0, **body.model_dump(exclude_none=True))
    return _user_out(access, changed, access.administered())


def list_members(call: Call) -> list[MembershipOut]:
    access = Access(call)
    facts = access.require_code(call.path["code"])
    engine = _engine(call)
    out = []
    for membership in store.list_memberships(engine, institution_pk=facts.pk):
        user = store.get_user(engine, membership.user_pk)
        out.append(_membership_out(access, user, facts.pk, membership.roles))
    return out


INVITED = (
    "if an account has this email and is not yet a member, its owner is invited and becomes "
    "a member on accepting"
)


def add_member(call: Call) -> MembershipAnswer:
    """Added at once only if every institution of the person is one the caller administers;
    otherwise an invitation, and an unknown email answers exactly the same."""
    access = Access(call)
    institution_pk = access.require_code(call.path["code"]).pk
    access.require_access(institution_pk)
    body: MembershipIn = call.body
    engine = _engine(call)
    roles = [r.value for r in body.roles]
    try:
        user = store.find_user(engine, body.email)
    except store.UnknownRecord:
        refused = Decision(False, "no-such-account", "no account has this email")
        access.audit(refused, institution_pk, "invite", outcome_shown="invited")
        return MembershipAnswer(outcome="invited", message=INVITED)
    account = access.account(user)
    decision = access.decide_on(Resource.account_of(account, institution_pk))
    if decision.allowed:
        access.audit(decision, institution_pk, target_user=user.pk)
        membership = store.set_membership(engine, user.pk or 0, institution_pk, roles)
        out = _membership_out(access, user, institution_pk, membership.roles)
        return MembershipAnswer(outcome="added", message="added", membership=out)
    if institution_pk not in account.institution_pks:
        store.invite(engine, user.pk or 0, institution_pk, roles, access.user_pk)
    access.audit(decision, institution_pk, "invite", target_user=user.pk)
    return MembershipAnswer(outcome="invited", message=INVITED)


def _member(access: Access, code: str, user_pk: int) -> tuple[int, User]:
    facts = access.require_code(code)
    engine = _engine(access.call)
    if facts.pk not in store.load_memberships(engine, user_pk):
        raise NotFound(f"user {user_pk} is not a member of {code!r}")
    user = store.get_user(engine, user_pk)
    access.require_account(access.account(user), facts.pk)
    return facts.pk, user


def set_member_roles(call: Call) -> MembershipOut:
    access = Access(call)
    institution_pk, user = _member(access, call.path["code"], call.path["user_pk"])
    roles = [r.value for r in call.body.roles]
    membership = store.set_membership(_engine(call), user.pk or 0, institution_pk, roles)
    return _membership_out(access, user, institution_pk, membership.roles)


def remove_member(call: Call) -> None:
    access = Access(call)
    institution_pk, user = _member(access, call.path["code"], call.path["user_pk"])
    store.remove_membership(_engine(call), user.pk or 0, institution_pk)


# --- invitations: the invitee's side --------------------------------------------------------


def _invitee(access: Access) -> int:
    if access.user_pk is None:
        raise HTTPException(403, "invitations are for people signed in, not API clients")
    return access.user_pk


def _invitation_out(access: Access, invitation: Invitation) -> InvitationOut:
    return InvitationOut(
        pk=invitation.pk or 0,
        institution=access.code_of(invitation.institution_pk),
        roles=[r for r in invitation.roles.split(",") if r],  # type: ignore[misc]
        created_at=invitation.created_at,
    )


def list_invitations(call: Call) -> list[InvitationOut]:
    access = Access(call)
    mine = store.list_invitations(_engine(call), _invitee(access))
    return [_invitation_out(access, invitation) for invitation in mine]


def _answer_invitation(call: Call, accept: bool) -> InvitationOut:
    access = Access(call)
    pk = call.path["invitation_pk"]
    take = store.accept_invitation if accept else store.decline_invitation
    try:
        invitation = take(_engine(call), pk, _invitee(access))
    except store.UnknownRecord:
        raise NotFound(f"no invitation {pk}") from None
    verb = "accepted" if accept else "declined"
    done = Decision(True, f"invitation-{verb}", f"{access.principal.label} {verb} invitation {pk}")
    access.audit(done, invitation.institution_pk, "invite", roles=invitation.roles)
    return _invitation_out(access, invitation)


def accept_invitation(call: Call) -> InvitationOut:
    return _answer_invitation(call, accept=True)


def decline_invitation(call: Call) -> InvitationOut:
    return _answer_invitation(call, accept=False)


# --- registrations --------------------------------------------------------------------------


def register(call: Call) -> RegistrationAccepted:
    """Public. Answers alike whether or not the email already has an account, and whether or
    not the institution code exists: an unknown code is recorded (audit and log), nothing more."""
    body: RegistrationIn = call.body
    engine = _engine(call)
    answer = RegistrationAccepted(
        message=f"registered for {body.institution}; an administrator will approve or reject it"
    )
    try:
        institution = store.find_institution(engine, body.institution)
    except store.UnknownRecord:
        # Bad input still answers 400, and the password is hashed, as for a known code.
        store.check_email(body.email)
        store.check_text(body.name, "name", 256, required=True)
        store.hash_new_password(body.password)
        reason = f"no institution {body.institution[:32]!r}: nothing registered"
        log.info("registration for unknown institution %r ignored", body.institution[:32])
        record(
            engine,
            AuditRecord(
                action="register",
                outcome="denied",
                rule="unknown-institution",
                reason=reason,
                client_address=call.request.client.host if call.request.client else "",
                detail={"institution": body.institution[:32]},
            ),
        )
        return answer
    waiting = on_registration(EventKind.REGISTRATION_WAITING, call.now)
    store.register(engine, body.email, body.name, body.password, institution.pk or 0, waiting)
    return answer


def _registration_out(access: Access, registration: Registration, user: User) -> RegistrationOut:
    return RegistrationOut(
        pk=registration.pk or 0,
        institution_pk=registration.institution_pk,
        institution=access.code_of(registration.institution_pk),
        email=user.email,
        name=user.name,
        status=registration.status,  # type: ignore[arg-type]
        roles=[r for r in registration.roles.split(",") if r],  # type: ignore[misc]
        requested_at=registration.requested_at,
        decided_at=registration.decided_at,
        note=registration.note,
        confirmation_recorded_at=registration.confirmation_recorded_at,
    )


def _queue(access: Access, pks: frozenset[int], query: RegistrationQuery) -> list[RegistrationOut]:
    status = None if query.status == "all" else query.status
    rows = store.list_registrations(_engine(access.call), pks, status)
    return [_registration_out(access, registration, user) for registration, user in rows]


def list_registrations(call: Call) -> list[RegistrationOut]:
    access = Access(call)
    return _queue(access, access.administered(), call.query)


def list_institution_registrations(call: Call) -> list[RegistrationOut]:
    access = Access(call)
    facts = access.require_code(call.path["code"])
    return _queue(access, frozenset({facts.pk}), call.query)


def _decidable(access: Access, pk: int) -> Registration:
    try:
        registration = store.get_registration(_engine(access.call), pk)
    except store.UnknownRecord:
        raise NotFound(f"no registration {pk}") from None
    access.require(registration.institution_pk, f"registration {pk}")
    return registration


def approve_registration(call: Call) -> RegistrationOut:
    access = Access(call)
    registration = _decidable(access, call.path["registration_pk"])
    access.require_access(registration.institution_pk)
    roles = [r.value for r in call.body.roles]
    engine = _engine(call)
    approved = on_registration(EventKind.REGISTRATION_APPROVED, call.now, access.user_pk)
    done = store.approve_registration(
        engine, registration.pk or 0, roles, access.user_pk, call.now, approved
    )
    return _registration_out(access, done, store.get_user(engine, done.user_pk))


def reject_registration(call: Call) -> RegistrationOut:
    access = Access(call)
    registration = _decidable(access, call.path["registration_pk"])
    engine = _engine(call)
    rejected = on_registration(EventKind.REGISTRATION_REJECTED, call.now, access.user_pk)
    done = store.reject_registration(
        engine, registration.pk or 0, access.user_pk, call.body.note, call.now, rejected
    )
    return _registration_out(access, done, store.get_user(engine, done.user_pk))


# --- API clients and their tokens -----------------------------------------------------------


def _client_out(engine: Engine, client: ApiClient) -> ApiClientOut:
    tokens = [
        ApiTokenOut(
            token_id=t.token_id,
            scopes=[s for s in t.scopes.split(",") if s],  # type: ignore[misc]
            expires_at=t.expires_at,
            last_used_at=t.last_used_at,
            revoked_at=t.revoked_at,
            created_at=t.created_at,
        )
        for t in store.list_api_tokens(engine, client.pk or 0)
    ]
    return ApiClientOut(
        pk=client.pk or 0,
        name=client.name,
        institution_pk=client.institution_pk,
        roles=[r for r in client.roles.split(",") if r],  # type: ignore[misc]
        disabled=client.disabled,
        created_at=client.created_at,
        tokens=tokens,
    )


def _issue(call: Call, client_pk: int, body: TokenIn) -> TokenCreated:
    engine = _engine(call)
    expires = call.now + timedelta(days=body.expires_days) if body.expires_days else None
    issued = store.issue_api_token(engine, client_pk, [s.value for s in body.scopes], expires)
    client = store.get_api_client(engine, client_pk)
    return TokenCreated(
        token=issued.token, token_id=issued.record.token_id, client=_client_out(engine, client)
    )


def list_api_clients(call: Call) -> list[ApiClientOut]:
    facts = Access(call).require_code(call.path["code"])
    engine = _engine(call)
    return [_client_out(engine, c) for c in store.list_api_clients(engine, [facts.pk])]


def create_api_client(call: Call) -> TokenCreated:
    access = Access(call)
    facts = access.require_code(call.path["code"])
    access.require_access(facts.pk)
    body: ApiClientIn = call.body
    roles = [r.value for r in body.roles]
    client = store.create_api_client(_engine(call), body.name, facts.pk, roles)
    return _issue(call, client.pk or 0, body)


def _client(access: Access, pk: int) -> ApiClient:
    try:
        client = store.get_api_client(_engine(access.call), pk)
    except store.UnknownRecord:
        raise NotFound(f"no API client {pk}") from None
    access.require(client.institution_pk, f"API client {pk}")
    return client


def get_api_client(call: Call) -> ApiClientOut:
    return _client_out(_engine(call), _client(Access(call), call.path["client_pk"]))


def revoke_api_client(call: Call) -> ApiClientOut:
    client = _client(Access(call), call.path["client_pk"])
    engine = _engine(call)
    return _client_out(engine, store.revoke_api_client(engine, client.pk or 0, call.now))


def issue_api_token(call: Call) -> TokenCreated:
    access = Access(call)
    client = _client(access, call.path["client_pk"])
    access.require_access(client.institution_pk)
    return _issue(call, client.pk or 0, call.body)


def revoke_api_token(call: Call) -> None:
    client = _client(Access(call), call.path["client_pk"])
    store.revoke_api_token(_engine(call), client.pk or 0, call.path["token_id"], call.now)


# --- the operation list and the mount -------------------------------------------------------


def _pk(text: str) -> int:
    value = int(text) if text.isdecimal() else 0
    if not 1 <= value <= 2**31 - 1:
        raise ValueError(text)
    return value


def _matching(pattern: re.Pattern[str]) -> Any:
    def parse(text: str) -> str:
        if not pattern.match(text):
            raise ValueError(text)
        return text

    return parse


_PK = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
PARAMETERS = {
    "code": PathParameter({"type": "string", "pattern": _CODE.pattern}, _matching(_CODE)),
    "user_pk": PathParameter(_PK, _pk),
    "registration_pk": PathParameter(_PK, _pk),
    "invitation_pk": PathParameter(_PK, _pk),
    "client_pk": PathParameter(_PK, _pk),
    "token_id": PathParameter(
        {"type": "string", "pattern": _TOKEN_ID.pattern}, _matching(_TOKEN_ID)
    ),
    "node_pk": PathParameter(_PK, _pk),
    "route_pk": PathParameter(_PK, _pk),
    "job_pk": PathParameter(_PK, _pk),
    "permission_pk": PathParameter(_PK, _pk),
    "rule_pk": PathParameter(_PK, _pk),
    "grant_pk": PathParameter(_PK, _pk),
    "hold_pk": PathParameter(_PK, _pk),
    "day": PathParameter({"type": "string", "format": "date"}, date.fromisoformat),
    "profile": PathParameter(
        {"type": "string", "pattern": _PROFILE.pattern}, _matching(_PROFILE), "a profile's name"
    ),
}

_I = "institutions"
_U = "users"
_R = "registrations"
_C = "api-clients"
OPERATIONS: list[Operation] = [
    Operation("GET", "/institutions", list_institutions, "institutions you administer", _I,
              response=list[InstitutionOut]),
    Operation("POST", "/institutions", create_institution, "create an institution (system)", _I,
              InstitutionIn, InstitutionOut, 201),
    Operation("GET", "/institutions/{code}", get_institution, "one institution", _I,
              response=InstitutionOut),
    Operation("PATCH", "/institutions/{code}", update_institution, "change an institution", _I,
              InstitutionPatch, InstitutionOut),
    Operation("GET", "/institutions/{code}/security-institutions", list_security_institutions,
              "its security institutions", _I, response=list[InstitutionOut]),
    Operation("POST", "/institutions/{code}/security-institutions", create_security_institution,
              "create a security institution", _I, SecurityInstitutionIn, InstitutionOut, 201),
    Operation("GET", "/users", list_users, "users of institutions you administer", _U,
              response=list[UserOut]),
    Operation("POST", "/users", create_user, "create a user", _U, UserIn, UserOut, 201),
    Operation("GET", "/users/{user_pk}", get_user, "one user", _U, response=UserOut),
    Operation("PATCH", "/users/{user_pk}", update_user, "change, disable or enable a user", _U,
              UserPatch, UserOut),
    Operation("GET", "/institutions/{code}/memberships", list_members, "members and roles", _U,
              response=list[MembershipOut]),
    Operation("POST", "/institutions/{code}/memberships", add_member,
              "add a user (by email) with roles, or invite them", _U, MembershipIn,
              MembershipAnswer, 202),
    Operation("PUT", "/institutions/{code}/memberships/{user_pk}", set_member_roles,
              "replace a member's roles", _U, RolesIn, MembershipOut),
    Operation("DELETE", "/institutions/{code}/memberships/{user_pk}", remove_member,
              "remove a member", _U, status=204),
    Operation("GET", "/invitations", list_invitations, "your open invitations", _U,
              response=list[InvitationOut]),
    Operation("POST", "/invitations/{invitation_pk}/accept", accept_invitation,
              "accept an invitation: you become a member", _U, InvitationAnswerIn, InvitationOut),
    Operation("POST", "/invitations/{invitation_pk}/decline", decline_invitation,
              "decline an invitation", _U, InvitationAnswerIn, InvitationOut),
    Operation("POST", "/registrations", register, "register for an institution (public)", _R,
              RegistrationIn, RegistrationAccepted, 202, public=True),
    Operation("GET", "/registrations", list_registrations, "the approval queue", _R,
              response=list[RegistrationOut], query=RegistrationQuery),
    Operation("GET", "/institutions/{code}/registrations", list_institution_registrations,
              "an institution's approval queue", _R, response=list[RegistrationOut],
              query=RegistrationQuery),
    Operation("POST", "/registrations/{registration_pk}/approve", approve_registration,
              "approve with roles; queues the confirmation email", _R, RolesIn,
              RegistrationOut),
    Operation("POST", "/registrations/{registration_pk}/reject", reject_registration,
              "reject", _R, RejectIn, RegistrationOut),
    Operation("GET", "/institutions/{code}/api-clients", list_api_clients,
              "API clients (never their secrets)", _C, response=list[ApiClientOut]),
    Operation("POST", "/institutions/{code}/api-clients", create_api_client,
              "create an API client; its token is shown once", _C, ApiClientIn, TokenCreated, 201),
    Operation("GET", "/api-clients/{client_pk}", get_api_client, "one API client", _C,
              response=ApiClientOut),
    Operation("DELETE", "/api-clients/{client_pk}", revoke_api_client,
              "revoke a client and all its tokens", _C, response=ApiClientOut),
    Operation("POST", "/api-clients/{client_pk}/tokens", issue_api_token,
              "another token, shown once", _C, TokenIn, TokenCreated, 201),
    Operation("DELETE", "/api-clients/{client_pk}/tokens/{token_id}", revoke_api_token,
              "revoke one token", _C, status=204),
]  # fmt: skip

INFO = {
    "title": "Ferry admin API",
    "version": "1",
    "description": "Institutions, users, roles, registrations, API clients, nodes, destination "
    "rules, hours and grants. Administrators of an institution see and change only their own.",
}


def api_mount() -> Mount:
    """`/api`: every operation, and `/api/openapi.json` generated from them."""
    operations = [
        *OPERATIONS,
        *destinations_api.OPERATIONS,
        *explain_api.OPERATIONS,
        *jobs_api.OPERATIONS,
        *node_transfers_api.OPERATIONS,
        *notifications_api.OPERATIONS,
        *oversight_api.OPERATIONS,
        *profiles_api.OPERATIONS,
        *receiving_api.OPERATIONS,
        *requests_api.OPERATIONS,
        *retention_api.OPERATIONS,
    ]
    parameters = {**PARAMETERS, **receiving_api.PARAMETERS, **requests_api.PARAMETERS}
    routes = build_routes(operations, parameters, authenticate, INFO, API_PREFIX)
    return Mount(API_PREFIX, routes=routes)
