"""Administration: pseudonymisation profiles (`/institutions/{code}/admin/profiles`).

A profile is the recipe of the institution's research and teaching copies (docs/exchange.md,
"Research and teaching copies"): the basic profile of PS3.15 Annex E plus the attributes kept,
removed or set, and what becomes of dates and private attributes. The page lists them, adds
one and removes one through the API's own operations (`list_institution_profiles`,
`add_profile`, `remove_profile`), so the decisions (the institution's administrators),
refusals and audit are the API's.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foundation.errors import Forbidden, InvalidQuery
from portal.pages.admin import admin_context, may_administer
from portal.pages.session import Place, Visitor, form_input, render, run_operation, signed_in
from portal.profiles_api import (
    PreviewIn,
    PreviewOut,
    ProfileIn,
    ProfileOut,
    add_profile,
    list_institution_profiles,
    preview_profile,
    remove_profile,
)

_WORDS = re.compile(r"[\s,;]+")


@signed_in
async def profiles_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    return await _show(request, visitor, place)


async def _show(
    request: Request, visitor: Visitor, place: Place, shown: PreviewOut | None = None
) -> Response:
    if not may_administer(visitor, place):  # a sender reads them through the API, not here
        raise Forbidden("the profiles are administered by the institution's administrators")
    path = {"code": place.code}
    rows: list[ProfileOut] = await run_operation(
        request, visitor, list_institution_profiles, path=path
    )
    context = admin_context(place, "profiles", visitor, profiles=rows, preview=shown)
    return render(request, "admin/profiles.html", context, visitor=visitor, timezone=place.timezone)


@signed_in
async def preview_a_profile(request: Request, visitor: Visitor) -> Response:
    """The profile tried on one of the institution's studies: the copy's attributes against
    the study's, on the profiles page (posted: the Study Instance UID stays out of URLs)."""
    place = visitor.place(request.path_params["code"])
    path = {"code": place.code, "profile": request.path_params["profile"]}
    body = form_input(PreviewIn, {"study": visitor.form.get("study", "").strip()})
    shown: PreviewOut = await run_operation(request, visitor, preview_profile, path=path, body=body)
    return await _show(request, visitor, place, shown)


def _words(text: str) -> list[str]:
    return [word for word in _WORDS.split(text) if word]


def _replacements(text: str) -> dict[str, str]:
    """`Keyword = value`, one a line."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, equals, value = line.partition("=")
        if not equals or not keyword.strip():
            raise InvalidQuery(f"set: write each as Keyword = value ({line.strip()[:40]!r})")
        found[keyword.strip()] = value.strip()
    return found


@signed_in
async def add_a_profile(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    form = visitor.form
    values = {
        "name": form.get("name", "").strip(),
        "description": form.get("description", "").strip(),
        "keep": _words(form.get("keep", "")),
        "remove": _words(form.get("remove", "")),
        "replace": _replacements(form.get("replace", "")),
        "dates": form.get("dates", "remove"),
        "private_tags": form.get("private_tags", "remove"),
    }
    body = form_input(ProfileIn, values)
    await run_operation(request, visitor, add_profile, body=body, path={"code": place.code})
    return _back(place, "profile-added")


@signed_in
async def remove_a_profile(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"code": place.code, "profile": request.path_params["profile"]}
    await run_operation(request, visitor, remove_profile, path=path)
    return _back(place, "profile-removed")


def _back(place: Place, done: str) -> Response:
    return RedirectResponse(f"/institutions/{place.code}/admin/profiles?done={done}", 303)
