"""More people for the pages' world: administrators of other institutions, system administrators."""

from __future__ import annotations

from policy import store
from tests.conftest import issue_token_for
from tests.policy._people import change_user
from tests.portal.pages.conftest import World, password_hash


def add_person(
    world: World, who: str, memberships: dict[str, str], *, system_admin: bool = False
) -> None:
    """`who@ferry.test`, with the password every person of the world has and a bearer token."""
    engine = world.server.archive.engine
    name = who.replace("-", " ").title()
    user = store.create_user(engine, world.email(who), name=name, system_admin=system_admin)
    change_user(engine, user.pk or 0, password_hash=password_hash())
    for code, roles in memberships.items():
        store.set_membership(engine, user.pk or 0, world.pks[code], roles.split(","))
    world.tokens[who] = issue_token_for(world.server.app, world.server.archive, user.pk or 0)


def csrf(page: object) -> str:
    """The page's CSRF token, as htmx sends it."""
    token: str = page.evaluate(  # type: ignore[attr-defined]
        "() => JSON.parse(document.body.getAttribute('hx-headers') || '{}')['X-CSRF-Token'] || ''"
    )
    return token
