"""The decision function: `decide(principal, action, resource, context, snapshot) -> Decision`.

Pure and deterministic: no I/O, no clock, no environment; everything it needs is passed in.
Deny rules are evaluated first and win; then allow rules in order; otherwise default deny.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from foundation.grants import DEFAULT_GRANT_ACTIONS, grant_allows, grant_is_live
from policy.hours import CoreHoursFacts, in_core_hours
from policy.principal import Principal
from policy.roles import Action

STUDY_ACTIONS = frozenset(
    {
        Action.SEARCH,
        Action.READ_METADATA,
        Action.READ_PIXELS,
        Action.DOWNLOAD,
        Action.DELETE,
        Action.HOLD,
    }
)


@dataclass(frozen=True)
class GrantFacts:
    """A grant on a study: to whom, until when, and what it lets them do (`foundation.grants`)."""

    institution_pk: int
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    actions: frozenset[str] = frozenset(DEFAULT_GRANT_ACTIONS)

    def active(self, now: datetime) -> bool:
        return grant_is_live(self.expires_at, self.revoked_at, now)

    def allows(self, action: Action) -> bool:
        """Never more than reading and downloading, whatever the row says."""
        return grant_allows(self.actions, action.value)


@dataclass(frozen=True)
class InstitutionFacts:
    pk: int
    code: str
    parent_pk: int | None = None
    worklist_restricted: bool = True
    hours: CoreHoursFacts = field(default_factory=CoreHoursFacts)


@dataclass(frozen=True)
class NodeFacts:
    """A node (a DICOM application entity) as every layer sees it: decisions, the store, the
    DIMSE edge. `pk` 0 is a node not stored yet. `can_query`/`can_write` are its rights both
    ways (see `policy.models.Node`); `restricted`: only whom its permissions name may use it."""

    pk: int
    institution_pk: int
    ae_title: str
    restricted: bool = True
    host: str = ""
    port: int = 104
    tls: bool = False
    description: str = ""
    can_query: bool = False
    can_write: bool = False
    move_destination: bool = False
    retrieve_method: str = "move"  # how Ferry retrieves from it: C-MOVE or C-GET
    worklist: bool = False
    reconcile_with_pk: int | None = None
    any_address: bool = False  # it may call from any address, not only `host`


# The rule of a refusal that pseudonymised copies would pass (`_decide_destination`).
PSEUDONYMISED_ONLY = "pseudonymised-only"


@dataclass(frozen=True)
class RuleFacts:
    """A destination rule: who may send to which destination, when, and where out of hours."""

    pk: int
    institution_pk: int
    node_pk: int | None
    sender_institution_pk: int | None
    window: str = "always"  # always, core, out-of-hours
    out_of_hours_node_pk: int | None = None
    out_of_hours_to_worklist: bool = False
    pseudonymised_only: bool = False  # the destination takes only pseudonymised copies


@dataclass(frozen=True)
class PolicySnapshot:
    institutions: Mapping[int, InstitutionFacts] = field(default_factory=dict)
    nodes: Mapping[int, NodeFacts] = field(default_factory=dict)
    rules: tuple[RuleFacts, ...] = ()


@dataclass(frozen=True)
class AccountFacts:
    """A person's account as the rules on accounts need it: their flag and their institutions."""

    user_pk: int
    system_admin: bool = False
    institution_pks: frozenset[int] = frozenset()


class ResourceKind(StrEnum):
    STUDY = "study"
    INSTITUTION = "institution"
    DESTINATION = "destination"
    TRANSFER = "transfer"  # a transfer seen from its sending or its receiving side
    ACCOUNT = "account"  # a person's account, or their membership in `institution_pk`
    ACCESS = "institution-access"  # a new way into an institution's studies
    REQUEST = "request"  # a request for imaging, seen by the institution asking or the one asked
    JOB = "job"  # an outbox job, owned by the institutions of the transfer or request it serves


@dataclass(frozen=True)
class Resource:
    kind: ResourceKind
    institution_pk: int | None = None  # owner of a study; the institution acted on
    study_uid: str = ""
    grants: tuple[GrantFacts, ...] = ()
    node_pk: int | None = None  # a destination node; None with DESTINATION: the worklist
    sender_institution_pk: int | None = None
    account: AccountFacts | None = None
    owners: frozenset[int] = frozenset()  # a job's institutions (none: Ferry's own work)
    pseudonymised: bool = False  # a destination sent pseudonymised copies, not the studies

    @classmethod
    def study(
        cls, uid: str, institution_pk: int | None, grants: tuple[GrantFacts, ...] = ()
    ) -> Resource:
        return cls(ResourceKind.STUDY, institution_pk, uid, grants)

    @classmethod
    def study_from_rows(
        cls,
        uid: str,
        institution_pk: int | None,
        grants: Iterable[tuple[int, datetime | None, datetime | None, str]],
    ) -> Resource:
        """From the index's own rows: (institution, expires_at, revoked_at, actions) per grant."""
        facts = tuple(
            GrantFacts(pk, expires, revoked, frozenset(actions.split(",")))
            for pk, expires, revoked, actions in grants
        )
        return cls.study(uid, institution_pk, facts)

    @classmethod
    def institution(cls, pk: int) -> Resource:
        return cls(ResourceKind.INSTITUTION, pk)

    @classmethod
    def transfer(cls, sender_pk: int, destination_pk: int) -> Resource:
        """A transfer: `institution_pk` receives it, `sender_institution_pk` sent it."""
        return cls(ResourceKind.TRANSFER, destination_pk, sender_institution_pk=sender_pk)

    @classmethod
    def request(cls, requesting_pk: int, asked_pk: int) -> Resource:
        """A request: `institution_pk` is asked, `sender_institution_pk` asks."""
        return cls(ResourceKind.REQUEST, asked_pk, sender_institution_pk=requesting_pk)

    @classmethod
    def destination(
        cls, institution_pk: int, node_pk: int | None, sender_pk: int, pseudonymised: bool = False
    ) -> Resource:
        return cls(
            ResourceKind.DESTINATION,
            institution_pk,
            node_pk=node_pk,
            sender_institution_pk=sender_pk,
            pseudonymised=pseudonymised,
        )

    @classmethod
    def account_of(cls, facts: AccountFacts, membership_in: int | None = None) -> Resource:
        """The account itself (None), or its membership in institution `membership_in`."""
        return cls(ResourceKind.ACCOUNT, membership_in, account=facts)

    @classmethod
    def job(cls, owners: frozenset[int]) -> Resource:
        """A job serving a transfer or request of `owners` (`exchange.job_owners`)."""
        return cls(ResourceKind.JOB, owners=owners)

    @classmethod
    def access_to(cls, institution_pk: int) -> Resource:
        """A membership, API client, node or grant that opens the institution's studies."""
        return cls(ResourceKind.ACCESS, institution_pk)


@dataclass(frozen=True)
class Context:
    now: datetime
    client_address: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str
    obligations: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()  # the rules looked at, in order, for `explain`


def _deny(rule: str, reason: str, chain: list[str]) -> Decision:
    return Decision(False, rule, reason, chain=(*chain, rule))


def _allow(rule: str, reason: str, chain: list[str], *obligations: str) -> Decision:
    return Decision(True, rule, reason, ("audit", *obligations), (*chain, rule))


def decide(
    principal: Principal,
    action: Action,
    resource: Resource,
    context: Context,
    snapshot: PolicySnapshot | None = None,
) -> Decision:
    snapshot = snapshot or PolicySnapshot()
    chain: list[str] = []
    if not principal.active:
        return _deny("principal-inactive", f"{principal.label} is not active", chain)
    chain.append("principal-active")
    if resource.kind is ResourceKind.STUDY:
        return _decide_study(principal, action, resource, context, chain)
    if resource.kind is ResourceKind.INSTITUTION:
        return _decide_institution(principal, action, resource, snapshot, chain)
    if resource.kind is ResourceKind.TRANSFER:
        return _decide_transfer(principal, action, resource, chain)
    if resource.kind in (ResourceKind.ACCOUNT, ResourceKind.ACCESS):
        return _decide_account_or_access(principal, action, resource, snapshot, chain)
    if resource.kind is ResourceKind.REQUEST:
        return _decide_request(principal, action, resource, chain)
    if resource.kind is ResourceKind.JOB:
        return _decide_job(principal, action, resource, chain)
    return _decide_destination(principal, action, resource, context, snapshot, chain)


def _decide_study(
    principal: Principal, action: Action, resource: Resource, context: Context, chain: list[str]
) -> Decision:
    if action not in STUDY_ACTIONS:
        return _deny("action-not-for-studies", f"{action} is not an action on a study", chain)
    if principal.studies is not None and resource.study_uid not in principal.studies:
        return _deny("study-limited", f"{principal.label}'s token is for other studies", chain)
    mine = principal.institutions_for(action)
    chain.append("owner-membership")
    if resource.institution_pk is not None and resource.institution_pk in mine:
        return _allow(
            "owner-membership",
            f"{principal.label} may {action} studies of institution {resource.institution_pk}",
            chain[:-1],
        )
    chain.append("active-grant")
    now = context.now
    held = [g for g in resource.grants if g.institution_pk in mine and g.active(now)]
    if held and action is Action.HOLD:
        # A holder may keep what it holds from being deleted; it changes nothing in the study.
        return _allow(
            "grant-holder-hold",
            f"institution {held[0].institution_pk} holds the study and may keep it",
            chain[:-1],
        )
    for grant in held:
        if grant.allows(action):
            return _allow(
                "active-grant",
                f"institution {grant.institution_pk} holds an active grant on the study",
                chain[:-1],
            )
    if held:
        # A grant shares reading; deleting, storing or changing stays with the owner.
        return _deny(
            "grant-excludes-action",
            f"institution {held[0].institution_pk}'s grant on the study does not give {action}",
            chain,
        )
    return _deny(
        "default-deny", f"no owning or granted path lets {principal.label} {action}", chain
    )


def _decide_institution(
    principal: Principal,
    action: Action,
    resource: Resource,
    snapshot: PolicySnapshot,
    chain: list[str],
) -> Decision:
    target = resource.institution_pk
    assert target is not None
    chain.append("membership-role")
    if action in principal.actions_in(target) and (
        target in principal.memberships or principal.system_admin
    ):
        rule = "membership-role" if target in principal.memberships else "system-admin"
        return _allow(rule, f"{principal.label} may {action} for institution {target}", chain[:-1])
    chain.append("parent-administrator")
    facts = snapshot.institutions.get(target)
    if (
        action is Action.ADMINISTER
        and facts is not None
        and facts.parent_pk is not None
        and Action.ADMINISTER in principal.actions_in(facts.parent_pk)
        and facts.parent_pk in principal.memberships
    ):
        return _allow(
            "parent-administrator",
            f"administrators of {facts.parent_pk} administer its security institutions",
            chain[:-1],
        )
    return _deny("default-deny", f"{principal.label} may not {action} for {target}", chain)


def _decide_destination(
    principal: Principal,
    action: Action,
    resource: Resource,
    context: Context,
    snapshot: PolicySnapshot,
    chain: list[str],
) -> Decision:
    sender = resource.sender_institution_pk
    destination = resource.institution_pk
    assert destination is not None and sender is not None
    chain.append("sender-role")
    if Action.TRANSFER not in principal.actions_in(sender) or sender not in principal.memberships:
        return _deny("sender-role", f"{principal.label} may not send for {sender}", chain[:-1])
    facts = snapshot.institutions.get(destination)
    if facts is None:
        return _deny("unknown-destination", f"institution {destination} is unknown", chain)
    restricted = (
        facts.worklist_restricted
        if resource.node_pk is None
        else snapshot.nodes.get(resource.node_pk, NodeFacts(0, 0, "", True)).restricted
    )
    chain.append("unrestricted-destination")
    if not restricted:
        return _allow("unrestricted-destination", "the destination takes any sender", chain[:-1])
    core = in_core_hours(context.now, facts.hours)
    wants_copies = False
    for rule in snapshot.rules:
        if rule.institution_pk != destination or rule.node_pk != resource.node_pk:
            continue
        if rule.sender_institution_pk not in (None, sender):
            continue
        chain.append(f"destination-rule:{rule.pk}")
        if rule.pseudonymised_only and not resource.pseudonymised:
            wants_copies = True
            continue
        if rule.window == "always" or (rule.window == "core") == core:
            return _routed(rule, core, chain)
        if rule.window == "core" and not core and _has_out_of_hours(rule):
            return _routed(rule, core, chain)
    if wants_copies:
        reason = f"{facts.code} takes only pseudonymised copies from this sender"
        return _deny(PSEUDONYMISED_ONLY, reason, chain)
    return _deny("default-deny", "no destination rule lets this sender send here now", chain)


def _has_out_of_hours(rule: RuleFacts) -> bool:
    return rule.out_of_hours_node_pk is not None or rule.out_of_hours_to_worklist


def _routed(rule: RuleFacts, core: bool, chain: list[str]) -> Decision:
    """Out of hours a core-hours rule may send elsewhere: the obligation names where."""
    name = f"destination-rule:{rule.pk}"
    if rule.window == "core" and not core:
        target = (
            "route-to:worklist"
            if rule.out_of_hours_to_worklist
            else f"route-to:node:{rule.out_of_hours_node_pk}"
        )
        return _allow(
            name, "out of hours: sent to the out-of-hours destination", chain[:-1], target
        )
    where = "worklist" if rule.node_pk is None else f"node:{rule.node_pk}"
    return _allow(name, f"allowed by destination rule {rule.pk}", chain[:-1], f"route-to:{where}")


# -- transfers -------------------------------------------------------------------------------

SENDER_SIDE = "side:sender"
RECEIVER_SIDE = "side:receiver"


def _decide_transfer(
    principal: Principal, action: Action, resource: Resource, chain: list[str]
) -> Decision:
    """A member of the sending or the receiving institution with the action there.

    The obligation says which side allowed it: the sender cancels and resends, the receiver
    views, downloads, marks done and returns. A study-limited token never sees transfers.
    """
    sender, receiver = resource.sender_institution_pk, resource.institution_pk
    assert sender is not None and receiver is not None
    chain.append("transfer-party")
    if principal.studies is not None:
        return _deny("study-limited", "a viewer token reads its study and nothing else", chain)
    if action is Action.ADMINISTER:
        return _decide_sender_administrator(principal, sender, chain[:-1])
    sides = ((receiver, RECEIVER_SIDE, "receiving"), (sender, SENDER_SIDE, "sending"))
    for pk, side, word in sides:
        if pk in principal.memberships and action in principal.actions_in(pk):
            reason = f"{principal.label} may {action} for the {word} institution {pk}"
            return _allow("transfer-party", reason, chain[:-1], side)
    parties = f"institutions {sender} and {receiver}"
    return _deny("transfer-party", f"{principal.label} may not {action} for {parties}", chain)


def _decide_sender_administrator(principal: Principal, sender: int, chain: list[str]) -> Decision:
    """`administer` a transfer: record by hand that a failed or partial delivery arrived
    ("deliver as sent"). Only an administrator of the sending institution, as its member: the
    delivery is the sender's to make and to answer for (it resends, cancels, and its failure
    list and statistics are what the mark closes). The receiving institution's administrators
    may not: a mark of theirs would close the sender's failure without the sender knowing, and
    they cannot redo the delivery if they were wrong; they tell the sender, who records it
    with that as the reason. Nor a system administrator: it is a statement about patients'
    images, not about running the service."""
    chain.append("sender-administrator")
    if _administers_as_member(principal, sender):
        reason = f"{principal.label} administers the sending institution {sender}"
        return _allow("sender-administrator", reason, chain[:-1], SENDER_SIDE)
    reason = f"only an administrator of the sending institution {sender} may do this"
    return _deny("sender-administrator", reason, chain)


# --- jobs ------------------------------------------------------------------------------------


def _decide_job(
    principal: Principal, action: Action, resource: Resource, chain: list[str]
) -> Decision:
    """See and retry a parked job: a system administrator any job (payloads carry what any
    part of Ferry writes); an administrator, as a member, of one of the job's institutions the
    jobs of its own transfers and requests. Ferry's own jobs (no owner) stay the system's."""
    if action is not Action.ADMINISTER:
        return _deny("action-not-for-jobs", f"{action} is not an action on jobs", chain)
    chain.append("system-admin")
    if _is_system(principal):
        return _allow("system-admin", f"{principal.label} is a system administrator", chain[:-1])
    chain.append("job-institution-administrator")
    if principal.studies is None:
        for pk in sorted(resource.owners):
            if _administers_as_member(principal, pk):
                reason = f"the job serves institution {pk}, which {principal.label} administers"
                return _allow("job-institution-administrator", reason, chain[:-1])
    return _deny("default-deny", f"{principal.label} may not see this job", chain)


# --- accounts and access into institutions ---------------------------------------------------
#
# A person's account spans institutions; their password opens all of them. So changing an
# account needs every institution it belongs to, administered by membership (a parent's
# administrator does not count: a security institution is hidden from its parent's staff), and
# a system administrator's account needs a system administrator. A new way into an institution's
# studies (a membership, an API client, a querying node, a grant of its study) is given by its
# own administrators or a system administrator, never by its parent's administrators.


def _is_system(principal: Principal) -> bool:
    # An API token is never a system administrator: only users carry the flag.
    return principal.system_admin and Action.ADMINISTER in principal.actions_in(0)


def _administers_as_member(principal: Principal, institution_pk: int) -> bool:
    return institution_pk in principal.memberships and Action.ADMINISTER in principal.actions_in(
        institution_pk
    )


def _decide_account_or_access(
    principal: Principal,
    action: Action,
    resource: Resource,
    snapshot: PolicySnapshot,
    chain: list[str],
) -> Decision:
    if action is not Action.ADMINISTER:
        return _deny("action-not-for-accounts", f"{action} is not an action on accounts", chain)
    chain.append("system-admin")
    if _is_system(principal):
        return _allow("system-admin", f"{principal.label} is a system administrator", chain[:-1])
    account = resource.account
    if account is not None and account.system_admin:
        return _deny(
            "system-account",
            "only a system administrator may change a system administrator's account",
            chain,
        )
    target = resource.institution_pk
    if target is not None:
        refused = _refuse_access(principal, target, snapshot, chain)
        if refused is not None:
            return refused
        if account is None:
            return _allow("membership-role", f"{principal.label} administers {target}", chain[:-1])
        if target in account.institution_pks:
            return _allow("membership-role", f"already a member of {target}", chain[:-1])
    assert account is not None
    return _decide_whole_account(principal, account, target is not None, chain)


def _refuse_access(
    principal: Principal, target: int, snapshot: PolicySnapshot, chain: list[str]
) -> Decision | None:
    """None when the principal administers `target` as its member; the refusal otherwise."""
    chain.append("membership-role")
    if _administers_as_member(principal, target):
        return None
    facts = snapshot.institutions.get(target)
    parent = facts.parent_pk if facts is not None else None
    if parent is not None and _administers_as_member(principal, parent):
        return _deny(
            "security-institution-access",
            f"administrators of {parent} manage security institution {target}'s settings, "
            "but only its own administrators or a system administrator give access to it",
            chain[:-1],
        )
    return _deny("default-deny", f"{principal.label} may not give access to {target}", chain)


def _decide_whole_account(
    principal: Principal, account: AccountFacts, joining: bool, chain: list[str]
) -> Decision:
    chain.append("administrator-of-every-institution")
    theirs = account.institution_pks
    if theirs and all(_administers_as_member(principal, pk) for pk in theirs):
        return _allow(
            "administrator-of-every-institution",
            f"{principal.label} administers every institution of user {account.user_pk}",
            chain[:-1],
        )
    if joining:
        return _deny(
            "invitation-required",
            "the account belongs to institutions you do not administer (or to none): "
            "its owner must accept an invitation",
            chain[:-1],
        )
    return _deny(
        "account-beyond-your-institutions",
        "the account also belongs to institutions you do not administer",
        chain[:-1],
    )


# -- requests ---------------------------------------------------------------------------------

REQUESTER_SIDE = "side:requester"
ANSWERER_SIDE = "side:answerer"


def _decide_request(
    principal: Principal, action: Action, resource: Resource, chain: list[str]
) -> Decision:
    """`request` from the asking institution (create, cancel), `answer` from the asked one;
    `search` (see the request and its history) for whoever may do either on their side."""
    requesting, asked = resource.sender_institution_pk, resource.institution_pk
    assert requesting is not None and asked is not None
    chain.append("request-party")
    if principal.studies is not None:
        return _deny("study-limited", "a viewer token reads its study and nothing else", chain)
    sides = ((requesting, Action.REQUEST, REQUESTER_SIDE), (asked, Action.ANSWER, ANSWERER_SIDE))
    for pk, needed, side in sides:
        if action not in (needed, Action.SEARCH) or pk not in principal.memberships:
            continue
        if needed in principal.actions_in(pk):
            reason = f"{principal.label} may {needed} for institution {pk}"
            return _allow("request-party", reason, chain[:-1], side)
    parties = f"the request of {requesting} to {asked}"
    return _deny("request-party", f"{principal.label} may not {action} for {parties}", chain)
