"""Who is asking for a page, and the checks every page makes before it runs.

- `signed_in(handler)`: the session cookie proves a person, through the same
  `Authenticator.authenticate` the API uses; without it a page answers 303 to
  `/sign-in?next=<this page>` (a path on this site only). Every unsafe method must carry the
  session's CSRF token, as the form field `csrf_token` or the `X-CSRF-Token` header (htmx sends
  the header from `<body hx-headers>`), checked by the authenticator against the token bound
  into the signed session: else 403, and nothing is done.
- `public(handler)`: pages anyone may open (front page, sign-in, register). Their forms carry a
  pre-session token: the `ferry_form` cookie (HttpOnly, SameSite=Strict) echoed in a hidden
  field, so another site cannot post them in a visitor's name.
- A refusal from the core becomes a page (`portal.pages.errors`): what may not be seen is 404.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import anyio
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.parties import Actor
from foundation.errors import (
    AuthenticationFailed,
    FerryError,
    Forbidden,
    InvalidQuery,
    NotFound,
    PayloadTooLarge,
)
from policy import store
from policy.authentication import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    Authenticator,
    Credentials,
)
from policy.decision import (
    Context,
    Decision,
    InstitutionFacts,
    PolicySnapshot,
    Resource,
    decide,
)
from policy.principal import Principal, PrincipalKind
from policy.roles import Action
from policy.tokens import read_unverified
from portal.i18n import choose_locale, plural_translator, translator
from portal.openapi import Call
from portal.pages.errors import TITLES, page_status
from portal.sign_in_page import safe_next
from portal.templating import build_templates

CSRF_FIELD = "csrf_token"
FORM_COOKIE = "ferry_form"
FORM_FIELD = "form_token"
MAX_FORM_BYTES = 64 * 1024
SIGN_IN_PATH = "/sign-in"
# The attribute the route walk looks for (tests/dicomweb/test_guard.py): a page decides itself.
GUARD_ATTRIBUTE = "__ferry_guard__"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

templates = build_templates()
# What a page says after a form worked (`?done=<key>`): known keys only, never text from a URL.
FLASH = {
    "registered": "Thank you: your registration was received.",
    "returned": "The transfer was returned to its sender.",
    "sent": "The transfer was sent.",
    "fetching": "Ferry is fetching the studies from the node; it sends them when they are in.",
    "discarded": "The draft was discarded.",
    "registration-approved": "The registration was approved: the person was emailed.",
    "registration-rejected": "The registration was rejected: the person was emailed.",
    "roles-saved": "The roles were saved.",
    "node-added": "The node was added.",
    "node-removed": "The node was removed.",
    "right-added": "The right was given.",
    "right-removed": "The right was taken away.",
    "rule-added": "The rule was added.",
    "rule-removed": "The rule was removed.",
    "hours-saved": "The core hours were saved.",
    "holiday-added": "The holiday was added.",
    "holiday-removed": "The holiday was removed.",
    "token-revoked": "The token was revoked: it no longer works.",
    "client-revoked": "The API client and all its tokens were revoked.",
    "job-retried": "The job was sent round again.",
    "route-added": "The route was added.",
    "route-removed": "The route was removed.",
    "profile-added": "The profile was added.",
    "profile-removed": "The profile was removed.",
    "copying": "Ferry is making the pseudonymised copies; it sends them when they are in.",
    "transfer-resent": "The transfer was sent again.",
    "transfer-marked-delivered": "The transfer was marked delivered; its history keeps why.",
    "done": "Marked done.",
    "delivering": "The download to the node was started.",
    "requested": "Your request was sent.",
    "answered": "The request was answered.",
    "rejected": "The request was rejected.",
    "nothing-found": "The requester was told that nothing was found.",
    "cancelled": "The request was cancelled.",
    "saved": "Your choice was saved.",
    "signed-out": "You are signed out.",
}


@dataclass(frozen=True)
class Place:
    """An institution as the person sees it: where they belong."""

    pk: int
    code: str
    name: str
    timezone: str
    parent_pk: int | None = None


@dataclass(frozen=True)
class Visitor:
    """The signed-in person of one page request."""

    principal: Principal
    email: str
    name: str
    csrf_token: str
    places: tuple[Place, ...]
    now: datetime
    client_address: str = ""
    form: Mapping[str, str] = field(default_factory=dict)
    # The path's institution when the person is no member of it but may administer it (a
    # system administrator): its dashboard, administration and oversight pages open for them.
    opened: tuple[Place, ...] = ()

    @property
    def actor(self) -> Actor:
        return Actor(self.principal, self.now, self.client_address, "portal")

    @property
    def timezone(self) -> str:
        return self.places[0].timezone if self.places else "UTC"

    def place(self, code: str) -> Place:
        """One of the person's institutions (or the one `opened` for them); any other answers
        like one that does not exist."""
        for place in (*self.places, *self.opened):
            if place.code == code:
                return place
        raise NotFound(f"no institution {code[:32]!r}")


InputModel = TypeVar("InputModel", bound=BaseModel)
Result = TypeVar("Result")
PageHandler = Callable[[Request, Visitor], Awaitable[Response]]
PublicHandler = Callable[[Request], Awaitable[Response]]


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] | None = getattr(request.app.state, "clock", None)
    return clock() if clock else datetime.now(UTC)


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _places(request: Request, principal: Principal) -> tuple[Place, ...]:
    rows = store.list_institutions(request.app.state.archive.engine, list(principal.memberships))
    ordered = sorted(rows, key=lambda row: (row.parent_pk is not None, row.name.lower()))
    return tuple(
        Place(row.pk or 0, row.code, row.name, row.timezone, row.parent_pk) for row in ordered
    )


def decide_on_place(
    principal: Principal, action: Action, place: Place, context: Context
) -> Decision:
    """`decide()` on an institution of a page, given what its rules read of it (its parent: the
    `parent-administrator` rule), exactly as the API's `Access.decide` decides it."""
    facts = InstitutionFacts(place.pk, place.code, place.parent_pk)
    snapshot = PolicySnapshot(institutions={place.pk: facts})
    return decide(principal, action, Resource.institution(place.pk), context, snapshot)


def _opened(
    request: Request, principal: Principal, places: tuple[Place, ...], now: datetime
) -> tuple[Place, ...]:
    """The institution named in the path, if the person belongs to none of that code but the
    decision lets them administer it (`_decide_institution`): a system administrator, or an
    administrator of its parent when it is a security institution."""
    code = request.path_params.get("code")
    if not isinstance(code, str) or any(place.code == code for place in places):
        return ()
    try:
        row = store.find_institution(request.app.state.archive.engine, code[:64])
    except store.UnknownRecord:
        return ()
    place = Place(row.pk or 0, row.code, row.name, row.timezone, row.parent_pk)
    context = Context(now, _client(request))
    if not decide_on_place(principal, Action.ADMINISTER, place, context).allowed:
        return ()
    return (place,)


def _visitor(request: Request) -> Visitor | None:
    """The person the session cookie proves (read as a GET: CSRF is checked apart)."""
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    authenticator: Authenticator = request.app.state.authenticator
    now = _now(request)
    try:
        principal = authenticator.authenticate(Credentials("GET", session=session), now)
    except AuthenticationFailed:
        return None
    if principal.kind is not PrincipalKind.USER or principal.id is None:
        return None
    csrf = read_unverified(session)[1].get("csrf")  # verified just now, with its signature
    user = store.get_user(authenticator.engine, principal.id)
    places = _places(request, principal)
    return Visitor(
        principal,
        user.email,
        user.name,
        csrf if isinstance(csrf, str) else "",
        places,
        now,
        _client(request),
        opened=_opened(request, principal, places, now),
    )


def _check_csrf(request: Request, offered: str) -> None:
    """The authenticator's own rule for unsafe methods on a session: 403 when it refuses."""
    authenticator: Authenticator = request.app.state.authenticator
    session = request.cookies.get(SESSION_COOKIE)
    credentials = Credentials(request.method, session=session, csrf=offered)
    try:
        authenticator.authenticate(credentials, _now(request))
    except AuthenticationFailed:
        raise Forbidden(
            "the form did not come from this Ferry page, or it is too old: reload and try again"
        ) from None


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded or multipart form of short text fields, at most 64 KiB."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"a form may have at most {MAX_FORM_BYTES} bytes")
    form: FormData = await request.form(max_files=0, max_fields=200)
    return {name: value for name, value in form.multi_items() if isinstance(value, str)}


def form_list(request: Request, name: str) -> list[str]:
    """Every value of a repeated field (checkboxes), read after `read_form`."""
    values: list[str] = request.state.form_lists.get(name, [])
    return values


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method not in SAFE_METHODS:
        referer = urlsplit(request.headers.get("referer", ""))
        target = referer.path or "/"
    location = f"{SIGN_IN_PATH}?next={quote(safe_next(target), safe='/')}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    visitor: Visitor | None = None,
    status: int = 200,
    timezone: str | None = None,
) -> Response:
    """A page in the visitor's language, times in `timezone` (else their first institution's)."""
    locale = choose_locale(request.headers.get("accept-language", ""))
    values: dict[str, Any] = {
        "me": visitor,
        "csrf_token": visitor.csrf_token if visitor else "",
        "form_token": getattr(request.state, "form_token", ""),
        "_": translator(locale),
        "ngettext": plural_translator(locale),
        "locale": locale,
        "tz": timezone or (visitor.timezone if visitor else "UTC"),
        "place": None,
        "flash": FLASH.get(request.query_params.get("done", ""), ""),
        **(context or {}),
    }
    response = templates.TemplateResponse(request, template, values, status_code=status)
    response.headers.update(PAGE_HEADERS)
    if getattr(request.state, "set_form_cookie", False):
        _set_form_cookie(request, response)
    return response


def error_page(request: Request, status: int, message: str, visitor: Visitor | None) -> Response:
    title = TITLES.get(status, "Something went wrong")
    context = {"status": status, "title": title, "message": message}
    return render(request, "errors/error.html", context, visitor=visitor, status=status)


async def _guarded(
    request: Request, visitor: Visitor | None, run: Callable[[], Awaitable[Response]]
) -> Response:
    try:
        return await run()
    except FerryError as error:
        status = page_status(error)
        if status == 500:
            raise
        return error_page(request, status, str(error), visitor)
    except HTTPException as error:
        return error_page(request, error.status_code, str(error.detail), visitor)


async def _remember_form(request: Request) -> dict[str, str]:
    form = await read_form(request)
    raw: FormData = await request.form()  # the same parsed form, cached by Starlette
    request.state.form_lists = {
        name: [v for v in raw.getlist(name) if isinstance(v, str)] for name in raw
    }
    return form


def signed_in(handler: PageHandler) -> PublicHandler:
    """A page for people signed in; see the module's docstring."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        visitor = await anyio.to_thread.run_sync(_visitor, request)
        if visitor is None:
            return sign_in_redirect(request)

        async def run() -> Response:
            current = visitor
            if request.method not in SAFE_METHODS:
                form = await _remember_form(request)
                offered = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
                await anyio.to_thread.run_sync(_check_csrf, request, offered)
                current = Visitor(**{**current.__dict__, "form": form})
            return await handler(request, current)

        return await _guarded(request, visitor, run)

    setattr(page, GUARD_ATTRIBUTE, "portal-page")
    return page


def _set_form_cookie(request: Request, response: Response) -> None:
    secure = _secure(request)
    response.set_cookie(
        FORM_COOKIE, request.state.form_token, httponly=True, samesite="strict", secure=secure
    )


def _secure(request: Request) -> bool:
    public_url = request.app.state.portal.public_url or ""
    return request.url.scheme == "https" or public_url.startswith("https://")


def public(handler: PublicHandler) -> PublicHandler:
    """A page anyone may open; its unsafe methods need the pre-session form token."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        token = request.cookies.get(FORM_COOKIE, "")
        request.state.form_token = token or secrets.token_urlsafe(24)
        request.state.set_form_cookie = not token

        async def run() -> Response:
            if request.method not in SAFE_METHODS:
                form = await _remember_form(request)
                offered = form.get(FORM_FIELD, "")
                if not token or not hmac.compare_digest(token.encode(), offered.encode()):
                    raise Forbidden(
                        "the form did not come from this Ferry page, or it is too old: "
                        "reload and try again"
                    )
                request.state.form = form
            return await handler(request)

        return await _guarded(request, None, run)

    setattr(page, GUARD_ATTRIBUTE, None)
    return page


async def optional_visitor(request: Request) -> Visitor | None:
    """For public pages that change for someone signed in (the front page)."""
    return await anyio.to_thread.run_sync(_visitor, request)


def form_input(model: type[InputModel], values: Mapping[str, Any]) -> InputModel:
    """A form's text fields as the API's own input model (lenient about text for numbers and
    names, as a form sends only text); a refusal is a 400 page naming the fields."""
    try:
        return model.model_validate(dict(values), strict=False)
    except ValidationError as error:
        fields = sorted({".".join(str(p) for p in item["loc"]) for item in error.errors()})
        raise InvalidQuery("check " + ", ".join(f.replace("_", " ") for f in fields)) from None


async def run_operation(
    request: Request,
    visitor: Visitor,
    handler: Callable[[Call], Result],
    *,
    path: Mapping[str, Any] | None = None,
    query: Any = None,
    body: Any = None,
) -> Result:
    """One of the JSON API's operations, for the page's person: the same decisions and audit."""
    call = Call(request, visitor.principal, dict(path or {}), query, body, now=visitor.now)
    return await anyio.to_thread.run_sync(handler, call)
