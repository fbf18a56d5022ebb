"""The front page, signing in and out, and registering: what someone new to Ferry sees first.

Signing in posts a plain form (no script needed) to `POST /sign-in`, which checks the password
as `POST /auth/login` does and sets the same session cookies. Someone who registered and is not
yet approved sees how their registration stands there, and only with their own password.
Registering goes through the admin API's own `register` operation, so the page and the API
answer alike (the institution's administrators are emailed; an unknown code is not revealed).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import anyio
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foundation.errors import AuthenticationFailed, FerryError
from policy import store
from policy.authentication import REFUSED, SESSION_COOKIE, Authenticator, SessionGrant
from policy.passwords import SignInRefused, authenticate_password
from policy.principal import ANONYMOUS
from policy.roles import Action
from policy.tokens import TokenType
from portal.admin_api import register
from portal.api_schemas import RegistrationIn
from portal.auth_routes import clear_session_cookies, set_session_cookies
from portal.openapi import Call
from portal.pages.session import Visitor, optional_visitor, public, render, signed_in
from portal.sign_in_audit import audit_sign_in
from portal.sign_in_page import safe_next


def _now() -> datetime:
    return datetime.now(UTC)


def sign_in_choices(request: Request) -> dict[str, object]:
    """What the sign-in form offers besides the password: a button per provider with a client."""
    authenticator: Authenticator = request.app.state.authenticator
    return {"providers": authenticator.providers.for_browsers()}


def landing(visitor: Visitor) -> str:
    """Where a signed-in person starts: their first institution's dashboard, or asking for
    imaging when asking is all they may do there."""
    if not visitor.places:
        return "/account/notifications"
    first = visitor.places[0]
    actions = visitor.principal.actions_in(first.pk)
    if actions and actions <= {Action.REQUEST}:
        return f"/institutions/{first.code}/requests/new"
    return f"/institutions/{first.code}"


@public
async def home(request: Request) -> Response:
    visitor = await optional_visitor(request)
    if visitor is not None:
        return RedirectResponse(landing(visitor), status_code=303)
    context = {"next": "/", "error": "", **sign_in_choices(request)}
    return render(request, "front/home.html", context)


@public
async def sign_in_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    context = {"next": target, "error": "", "email": "", **sign_in_choices(request)}
    return render(request, "front/sign_in.html", context)


def _sign_in(authenticator: Authenticator, email: str, password: str) -> SessionGrant:
    now = _now()
    user = authenticate_password(authenticator.engine, authenticator.config, email, password, now)
    return authenticator.issue_session(user, now)


def _refusal(authenticator: Authenticator, email: str, password: str) -> str:
    """Why signing in failed, as far as the person may be told."""
    own = store.own_registration(authenticator.engine, email, password)
    if own is None:
        return "The email or the password is not right, or the account is locked for a while."
    registration, institution = own
    if registration.status == "pending":
        return (
            f"Your registration at {institution.name} is waiting for an administrator "
            "to approve it. You will get an email when it is decided."
        )
    if registration.status == "rejected":
        why = f" ({registration.note})" if registration.note else ""
        return f"Your registration at {institution.name} was not accepted{why}."
    return "This account is not active. Ask your institution's administrator."


@public
async def sign_in(request: Request) -> Response:
    form = request.state.form
    email, password = form.get("email", "").strip(), form.get("password", "")
    target = safe_next(form.get("next"))
    authenticator: Authenticator = request.app.state.authenticator
    try:
        if not email or not password:
            raise AuthenticationFailed("the email or the password is missing")
        grant = await anyio.to_thread.run_sync(_sign_in, authenticator, email, password)
    except AuthenticationFailed as failure:
        error = "Enter your email and password."
        if email and password:
            error = await anyio.to_thread.run_sync(_refusal, authenticator, email, password)
        why = failure.why if isinstance(failure, SignInRefused) else str(failure) or REFUSED
        refused = functools.partial(audit_sign_in, request, email, False, why, method="password")
        await anyio.to_thread.run_sync(refused)
        context = {"next": target, "error": error, "email": email, **sign_in_choices(request)}
        return render(request, "front/sign_in.html", context, status=401)
    allowed = functools.partial(audit_sign_in, request, grant.email, True, "", method="password")
    await anyio.to_thread.run_sync(allowed)
    response = RedirectResponse(target, status_code=303)
    set_session_cookies(request, response, grant)
    return response


@signed_in
async def sign_out(request: Request, visitor: Visitor) -> Response:
    authenticator: Authenticator = request.app.state.authenticator
    tokens = {TokenType.SESSION: request.cookies.get(SESSION_COOKIE)}
    await anyio.to_thread.run_sync(authenticator.sign_out, tokens, _now())
    response = RedirectResponse("/?done=signed-out", status_code=303)
    clear_session_cookies(request, response)
    return response


@public
async def register_page(request: Request) -> Response:
    context: dict[str, object] = {
        "error": "",
        "values": {},
        "institution": request.query_params.get("institution"),
    }
    return render(request, "front/register.html", context)


@public
async def register_person(request: Request) -> Response:
    form = request.state.form
    values = {k: form.get(k, "").strip() for k in ("email", "name", "institution")}
    try:
        body = RegistrationIn(**values, password=form.get("password", ""))
        if form.get("password", "") != form.get("password_again", ""):
            raise ValueError("The two passwords differ.")
        call = Call(request, ANONYMOUS, {}, None, body)
        await anyio.to_thread.run_sync(register, call)
    except (ValidationError, ValueError, FerryError) as error:
        message = _registration_problem(error)
        context = {"error": message, "values": values, "institution": values["institution"]}
        return render(request, "front/register.html", context, status=400)
    context = {"institution": values["institution"], "email": values["email"]}
    return render(request, "front/registered.html", context)


def _registration_problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        fields = sorted({str(item["loc"][0]) for item in error.errors() if item["loc"]})
        names = {"email": "email", "name": "name", "password": "password",
                 "institution": "institution code"}  # fmt: skip
        return "Check the " + ", ".join(names.get(f, f) for f in fields) + "."
    return str(error)
