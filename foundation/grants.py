"""Study grants: when a grant is live and what it lets its holder do, one rule in two forms.

A grant shares an owner's study with another institution for reading (and downloading, when
its actions say so); it never lets the holder delete, store into or change the study. The same
rule is written here twice, side by side, because two kinds of code need it: the Python
predicate (`grant_is_live`, `grant_allows`) for the decision on one study, and the SQL
expressions (`live_grant_clause`, `grant_allows_clause`) for searches that join on grants.
`tests/foundation/test_grants.py` runs both over one table of cases and checks they agree.

Imports nothing of Ferry's, so the archive's searches and the policy's `decide()` can share it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, false, literal, literal_column, or_

# The only actions a grant can ever carry (PS3.18 resources that read, never write).
GRANTABLE_ACTIONS = ("search", "read-metadata", "read-pixels", "download")
# A transfer's or an administrator's grant unless it says otherwise: reading and downloading.
DEFAULT_GRANT_ACTIONS = GRANTABLE_ACTIONS
_SEPARATOR = ","
DEFAULT_GRANT_ACTIONS_TEXT = _SEPARATOR.join(DEFAULT_GRANT_ACTIONS)  # the column's default


class InvalidGrantActions(ValueError):
    """A grant's actions name something a grant cannot give (delete, store, ...)."""


def grant_is_live(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> bool:
    """Live until it expires or its revocation takes effect (a revocation may be scheduled)."""
    if revoked_at is not None and revoked_at <= now:
        return False
    return expires_at is None or expires_at > now


def live_grant_clause(expires_at: Any, revoked_at: Any, now: datetime | Any) -> Any:
    """`grant_is_live` as SQL over a grant's two columns (`now` a time or a bound parameter)."""
    return and_(
        or_(revoked_at.is_(None), revoked_at > now),
        or_(expires_at.is_(None), expires_at > now),
    )


def parse_grant_actions(text: str) -> frozenset[str]:
    """The stored form (comma-separated) as a set; unknown or ungrantable names are refused."""
    names = frozenset(item.strip().lower() for item in text.split(_SEPARATOR) if item.strip())
    refused = sorted(names - set(GRANTABLE_ACTIONS))
    if refused:
        raise InvalidGrantActions(
            f"a grant may carry only {', '.join(GRANTABLE_ACTIONS)}; not {', '.join(refused)}"
        )
    if not names:
        raise InvalidGrantActions("a grant needs at least one action")
    return names


def format_grant_actions(actions: Iterable[str]) -> str:
    """The stored form, in a fixed order; checked as `parse_grant_actions` checks."""
    names = parse_grant_actions(_SEPARATOR.join(actions))
    return _SEPARATOR.join(name for name in GRANTABLE_ACTIONS if name in names)


def grant_allows(actions: str | Iterable[str], action: str) -> bool:
    """Whether a grant's actions include `action`; never anything outside GRANTABLE_ACTIONS."""
    names = actions.split(_SEPARATOR) if isinstance(actions, str) else list(actions)
    return action in GRANTABLE_ACTIONS and action in {name.strip() for name in names}


def grant_allows_clause(actions: Any, action: str) -> Any:
    """`grant_allows` as SQL over the stored comma-separated column."""
    if action not in GRANTABLE_ACTIONS:
        return false()
    wrapped = literal(_SEPARATOR) + actions + literal(_SEPARATOR)
    # The pattern is written into the SQL, not bound: SQLite prepares a statement again on
    # every run when a LIKE's pattern is a bound parameter (it might change the plan), which
    # cost a scoped search more than the rest of its query. `action` is one of the constants
    # above, never a client's text.
    return wrapped.like(literal_column(f"'%{_SEPARATOR}{action}{_SEPARATOR}%'"))
