"""Who receives an event's email: the policy's answer for each member, then their own choice.

Preferences are read and written here too (`read_choice`, `set_choice`): one row per person,
absent meaning the default ("own").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from exchange.notification_models import (
    DEFAULT_CHOICE,
    NotificationChoice,
    NotificationPreference,
)
from exchange.notifications import Event, hears
from policy.decision import Context, PolicySnapshot, Resource, decide
from policy.models import Membership, User, UserStatus
from policy.principal import Principal, PrincipalKind
from policy.roles import Role, parse_roles


@dataclass(frozen=True)
class Recipient:
    user_pk: int
    email: str
    choice: NotificationChoice
    rule: str  # the policy rule that let them hear of it ("person" for events about them)


def read_choice(engine: Engine, user_pk: int) -> NotificationChoice:
    with Session(engine) as session:
        row = session.get(NotificationPreference, user_pk)
    return NotificationChoice(row.choice) if row else DEFAULT_CHOICE


def set_choice(engine: Engine, user_pk: int, choice: NotificationChoice, now: datetime) -> None:
    with Session(engine) as session:
        row = session.get(NotificationPreference, user_pk)
        if row is None:
            row = NotificationPreference(user_pk=user_pk, updated_at=now)
        row.choice, row.updated_at = choice.value, now
        session.add(row)
        session.commit()


def _choices(session: Session, user_pks: Iterable[int]) -> dict[int, NotificationChoice]:
    query = select(NotificationPreference).where(
        col(NotificationPreference.user_pk).in_(list(user_pks))
    )
    return {row.user_pk: NotificationChoice(row.choice) for row in session.exec(query)}


def _principals(session: Session, institution_pks: set[int]) -> list[tuple[User, Principal]]:
    """Active members of these institutions, each with all their memberships, as principals."""
    members = select(Membership.user_pk).where(col(Membership.institution_pk).in_(institution_pks))
    users = list(
        session.exec(
            select(User)
            .where(col(User.pk).in_(members), User.status == UserStatus.ACTIVE)
            .order_by(col(User.pk))
        )
    )
    rows = session.exec(
        select(Membership).where(col(Membership.user_pk).in_([u.pk for u in users]))
    ).all()
    roles: dict[int, dict[int, frozenset[Role]]] = {}
    for row in rows:
        roles.setdefault(row.user_pk, {})[row.institution_pk] = parse_roles(row.roles)
    return [(user, _principal(user, roles.get(user.pk or 0, {}))) for user in users]


def _principal(user: User, memberships: dict[int, frozenset[Role]]) -> Principal:
    return Principal(PrincipalKind.USER, user.pk, user.email, memberships, user.system_admin)


def find_recipients(
    engine: Engine | Connection, event: Event, policy: PolicySnapshot, now: datetime
) -> list[Recipient]:
    """Everyone the policy lets hear of the event and who wants to, in user order."""
    with Session(engine) as session:
        if event.audience.action is None:
            return _the_person(session, event)
        facts = policy.institutions.get(event.institution_pk)
        if facts is None:
            return []
        # administrators of a parent administer its security institutions: they are asked too
        institutions = {facts.pk} if facts.parent_pk is None else {facts.pk, facts.parent_pk}
        candidates = _principals(session, institutions)
        choices = _choices(session, [user.pk or 0 for user, _ in candidates])
    found = []
    resource = Resource.institution(event.institution_pk)
    for user, principal in candidates:
        decision = decide(principal, event.audience.action, resource, Context(now), policy)
        if not decision.allowed:
            continue
        choice = choices.get(user.pk or 0, DEFAULT_CHOICE)
        own = event.audience.addressed or event.concerns(user.pk or 0)
        if hears(choice, own=own, failure=event.audience.failure):
            found.append(Recipient(user.pk or 0, user.email, choice, decision.rule))
    return found


def _the_person(session: Session, event: Event) -> list[Recipient]:
    """Events about one person (a registration decided) go to them, pending or active."""
    user = session.get(User, event.person_user_pk) if event.person_user_pk else None
    if user is None or user.status == UserStatus.DISABLED:
        return []
    row = session.get(NotificationPreference, user.pk)
    choice = NotificationChoice(row.choice) if row else DEFAULT_CHOICE
    if not hears(choice, own=True, failure=event.audience.failure):
        return []
    return [Recipient(user.pk or 0, user.email, choice, "person")]
