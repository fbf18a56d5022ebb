"""Membership invitations: offered by an administrator, accepted by the person signed in."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import col, select

from policy.models import Institution, Invitation, Membership, User
from policy.roles import Role
from policy.store._base import InvalidRecord, UnknownRecord, reading, roles_text, writing


def invite(
    engine: Engine,
    user_pk: int,
    institution_pk: int,
    roles: str | frozenset[Role] | list[str],
    invited_by_pk: int | None,
) -> Invitation:
    """Offer (or offer again, with these roles) a membership; nothing is granted yet."""
    stored = roles_text(roles)
    if not stored:
        raise InvalidRecord("an invitation needs at least one role")
    query = select(Invitation).where(
        Invitation.user_pk == user_pk, Invitation.institution_pk == institution_pk
    )
    with writing(engine, "the invitation changed meanwhile") as session:
        if session.get(User, user_pk) is None or session.get(Institution, institution_pk) is None:
            raise UnknownRecord("no such user or institution")
        invitation = session.exec(query).first() or Invitation(
            user_pk=user_pk, institution_pk=institution_pk
        )
        invitation.roles, invitation.invited_by_pk = stored, invited_by_pk
        session.add(invitation)
    return invitation


def list_invitations(engine: Engine, user_pk: int) -> list[Invitation]:
    """A person's open invitations, oldest first."""
    query = select(Invitation).where(Invitation.user_pk == user_pk)
    with reading(engine) as session:
        return list(session.exec(query.order_by(col(Invitation.created_at), col(Invitation.pk))))


def _take(engine: Engine, pk: int, user_pk: int, accept: bool) -> Invitation:
    with writing(engine, f"invitation {pk} changed meanwhile") as session:
        invitation = session.get(Invitation, pk)
        if invitation is None or invitation.user_pk != user_pk:
            raise UnknownRecord(f"no invitation {pk}")
        if accept:
            query = select(Membership).where(
                Membership.user_pk == user_pk,
                Membership.institution_pk == invitation.institution_pk,
            )
            membership = session.exec(query).first() or Membership(
                user_pk=user_pk, institution_pk=invitation.institution_pk
            )
            membership.roles = invitation.roles
            session.add(membership)
        session.delete(invitation)
    return invitation


def accept_invitation(engine: Engine, pk: int, user_pk: int) -> Invitation:
    """The invitee's own membership, with the roles offered; the invitation is spent."""
    return _take(engine, pk, user_pk, accept=True)


def decline_invitation(engine: Engine, pk: int, user_pk: int) -> Invitation:
    return _take(engine, pk, user_pk, accept=False)
