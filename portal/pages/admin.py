"""Administration pages of one institution (`/institutions/{code}/admin/...`): the registrations
waiting (approve with roles, reject with a reason) and the people and their roles.

Each page runs the admin JSON API's own operations (`list_institution_registrations`,
`approve_registration`, `reject_registration`, `list_members`, `set_member_roles`), so the
decisions (an institution administrator acts on their institutions only; access into a
security institution is given by its own administrators), refusals and audit are the API's.
The "Administration" tab is shown only to those the decision allows; anyone else opening an
administration page gets the API's refusal (403, or 404 for an institution they cannot see).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foundation.errors import InvalidQuery
from policy.decision import Resource, decide
from policy.roles import Action, Role
from portal.admin_api import (
    approve_registration,
    list_institution_registrations,
    list_members,
    reject_registration,
    set_member_roles,
)
from portal.api_schemas import (
    MembershipOut,
    RegistrationOut,
    RegistrationQuery,
    RejectIn,
    RolesIn,
)
from portal.pages.session import (
    Place,
    Visitor,
    form_input,
    form_list,
    render,
    run_operation,
    signed_in,
)

ROLE_WORDS = {
    Role.INSTITUTION_ADMIN: ("administrator", "people, nodes, rules, hours, audit"),
    Role.SENDER: ("sender", "sends studies and answers requests"),
    Role.RECEIVER: ("receiver", "receives, downloads and delivers studies"),
    Role.VIEWER: ("viewer", "views studies in the browser"),
    Role.REQUESTER: ("requester", "asks other institutions for imaging"),
    Role.AUDITOR: ("auditor", "reads the audit trail and statistics"),
}
TABS = (("registrations", "Registrations"), ("people", "People and roles"))


def may_administer(visitor: Visitor, place: Place) -> bool:
    """Whether the Administration tab is shown: the decision every admin operation makes."""
    resource = Resource.institution(place.pk)
    return decide(visitor.principal, Action.ADMINISTER, resource, visitor.actor.context).allowed


def _context(place: Place, tab: str, **values: object) -> dict[str, object]:
    return {
        "place": place,
        "admin_tab": tab,
        "admin_tabs": TABS,
        "roles": [(role.value, *ROLE_WORDS[role]) for role in Role],
        **values,
    }


@signed_in
async def registrations_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    status = request.query_params.get("status", "pending")
    query = form_input(RegistrationQuery, {"status": status})
    rows: list[RegistrationOut] = await run_operation(
        request, visitor, list_institution_registrations, path={"code": place.code}, query=query
    )
    context = _context(place, "registrations", registrations=rows, status=query.status)
    return render(request, "admin/registrations.html", context, visitor=visitor,
                  timezone=place.timezone)  # fmt: skip


def _registration_pk(request: Request) -> int:
    text = request.path_params["registration_pk"]
    if not text.isdigit() or len(text) > 10:
        raise InvalidQuery("no such registration")
    return int(text)


@signed_in
async def decide_registration(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"registration_pk": _registration_pk(request)}
    if visitor.form.get("decision") == "reject":
        note = form_input(RejectIn, {"note": visitor.form.get("note", "")})
        await run_operation(request, visitor, reject_registration, path=path, body=note)
        done = "registration-rejected"
    else:
        roles = form_list(request, "role")
        if not roles:
            raise InvalidQuery("choose at least one role to approve with")
        chosen = form_input(RolesIn, {"roles": roles})
        await run_operation(request, visitor, approve_registration, path=path, body=chosen)
        done = "registration-approved"
    return RedirectResponse(f"/institutions/{place.code}/admin?done={done}", status_code=303)


@signed_in
async def people_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    members: list[MembershipOut] = await run_operation(
        request, visitor, list_members, path={"code": place.code}
    )
    members.sort(key=lambda m: m.email)
    context = _context(place, "people", members=members)
    return render(request, "admin/people.html", context, visitor=visitor, timezone=place.timezone)


@signed_in
async def save_roles(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    text = request.path_params["user_pk"]
    if not text.isdigit() or len(text) > 10:
        raise InvalidQuery("no such person")
    roles = form_list(request, "role")
    if not roles:
        raise InvalidQuery("keep at least one role, or remove the person from the institution")
    body = form_input(RolesIn, {"roles": roles})
    path = {"code": place.code, "user_pk": int(text)}
    await run_operation(request, visitor, set_member_roles, path=path, body=body)
    return RedirectResponse(
        f"/institutions/{place.code}/admin/people?done=roles-saved", status_code=303
    )
