"""Explaining decisions to administrators: the principal a user is, and a decision in words."""

from __future__ import annotations

from sqlalchemy import Engine

from policy.decision import Decision
from policy.models import UserStatus
from policy.principal import Principal, PrincipalKind
from policy.store.users import find_user, load_memberships


def user_principal(engine: Engine, email: str) -> Principal:
    """The principal the user's own sign-in would produce, without signing in."""
    user = find_user(engine, email)
    return Principal(
        PrincipalKind.USER,
        user.pk,
        user.email,
        load_memberships(engine, user.pk) if user.pk is not None else {},
        system_admin=user.system_admin,
        active=user.status == UserStatus.ACTIVE,
    )


def describe_decision(decision: Decision) -> str:
    verdict = "ALLOWED" if decision.allowed else "DENIED"
    lines = [f"{verdict} by rule {decision.rule}: {decision.reason}"]
    lines.append("rules looked at: " + " -> ".join(decision.chain))
    if decision.obligations:
        lines.append("obligations: " + ", ".join(decision.obligations))
    return "\n".join(lines)
