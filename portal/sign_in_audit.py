"""Every sign-in, allowed or refused, as a `login` audit event (PS3.15 A.5.3, 110114).

One shape for every way in: the portal's sign-in form, a provider's button, and the API's
`POST /auth/login` and `POST /auth/token` (password grant). The actor is `user:EMAIL`, the email
offered or proved, as the trail names a person everywhere else (never the password); `detail`
says how (`protocol`, `path`, `method`, a provider or a grant) and a refusal's `reason` says
why, for the trail only: the answer stays the same for all.

The event names the institutions the person belonged to at that moment (`institutions`): the
account's memberships, or for a provider's sign-in the memberships its mapping gave. Each of
those institutions' administrators and auditors finds it in its scoped trail; no other does.
A refusal against an unknown email names none. When the event cannot be written the sign-in is
refused (AuditUnavailable, 503): nobody signs in unaudited.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine
from starlette.requests import Request

from audit.trail import AuditRecord, record
from policy import store

SIGN_IN = "login"


def institutions_of(engine: Engine, email: str) -> tuple[int, ...]:
    """The institutions the account with this email belongs to now; none for no account."""
    try:
        user = store.find_user(engine, email)
    except store.UnknownRecord:
        return ()
    return tuple(sorted(store.load_memberships(engine, user.pk or 0)))


def institutions_by_code(engine: Engine, codes: Iterable[str]) -> tuple[int, ...]:
    """A provider's mapping names institutions by code; an unknown code names none."""
    found = []
    for code in codes:
        try:
            found.append(store.find_institution(engine, code).pk or 0)
        except store.UnknownRecord:
            continue
    return tuple(sorted(found))


def audit_sign_in(
    request: Request,
    email: str,
    allowed: bool,
    reason: str,
    *,
    protocol: str = "portal",
    institutions: Iterable[int] | None = None,
    **detail: str,
) -> None:
    """One `login` event. `institutions` None: the memberships of the account with `email`."""
    engine = request.app.state.archive.engine
    concerned = institutions_of(engine, email) if institutions is None else tuple(institutions)
    record(
        engine,
        AuditRecord(
            action=SIGN_IN,
            outcome="allowed" if allowed else "denied",
            actor=f"user:{email}" if email else "anonymous",
            actor_kind="user" if email else "anonymous",
            reason=reason,
            client_address=request.client.host if request.client else "",
            detail={"protocol": protocol, "path": request.url.path, **detail},
            institutions=concerned,
        ),
    )
