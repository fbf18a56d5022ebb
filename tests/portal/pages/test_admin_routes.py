"""The direct-push routes page: an institution's administrator lists the called AE titles that
forward into it, adds one and removes one; nobody else may, and another institution's route is
not found."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.portal.pages._people import add_person, csrf
from tests.portal.pages.conftest import World, assert_accessible, snapshot


def _routes(world: World, who: str = "hosp-admin") -> dict[str, dict[str, Any]]:
    answer = world.api(who, "GET", "/routes")
    assert answer.status_code == 200, answer.text
    return {r["called_ae_title"]: r for r in answer.json()}


def test_an_administrator_adds_and_removes_a_route(world: World) -> None:
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin")
    page.get_by_role("link", name="Direct-push routes").click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP/admin/routes$"))
    table = page.get_by_role("table", name="Routes into Harbour Hospital")
    expect(table).to_contain_text("No route")
    assert_accessible(page)

    page.get_by_label("Called AE title").fill("TO_HARBOUR")
    page.get_by_label("Forwards to").select_option(label="node HOSP_PACS")
    page.get_by_label("Quiet time in seconds").fill("45")
    page.get_by_label("accept calling AE titles that name no node").check()
    page.get_by_label("Description").fill("Clinic North's PACS")
    page.get_by_role("button", name="Add the route").click()
    expect(page.get_by_role("status")).to_have_text("The route was added.")
    row = table.get_by_role("row", name=re.compile("TO_HARBOUR"))
    for words in ("node HOSP_PACS", "45 s", "accepted", "Clinic North's PACS"):
        expect(row).to_contain_text(words)

    page.get_by_label("Called AE title").fill("HARBOUR_WL")
    page.get_by_role("button", name="Add the route").click()
    expect(table.get_by_role("row", name=re.compile("HARBOUR_WL"))).to_contain_text("our worklist")
    assert_accessible(page)
    snapshot(page, "admin-routes")
    stored = _routes(world)
    assert stored["TO_HARBOUR"]["destination"] == "HOSP"
    assert stored["TO_HARBOUR"]["quiet_seconds"] == 45
    assert stored["TO_HARBOUR"]["accept_unknown_callers"] is True
    assert stored["HARBOUR_WL"]["destination_node_pk"] is None

    page.get_by_text("Remove TO_HARBOUR…").click()
    warning = page.get_by_text("A PACS sending to TO_HARBOUR is refused from then on.")
    expect(warning).to_be_visible()
    page.get_by_role("button", name="Remove route TO_HARBOUR").click()
    expect(page.get_by_role("status")).to_have_text("The route was removed.")
    expect(table).not_to_contain_text("TO_HARBOUR")
    assert set(_routes(world)) == {"HARBOUR_WL"}
    assert_accessible(page)


def test_bad_route_forms_say_why_and_change_nothing(world: World) -> None:
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin/routes")
    token = csrf(page)
    cases = [
        ({"called_ae_title": "FERRY"}, 400, "own AE title"),
        ({"called_ae_title": "BAD\\TITLE"}, 400, ""),
        ({"called_ae_title": "OK_TITLE", "quiet_seconds": "0"}, 400, "quiet seconds"),
        ({"called_ae_title": "OK_TITLE", "node": "x1"}, 400, ""),
        ({"called_ae_title": "OK_TITLE", "node": "99999"}, 404, ""),
    ]
    for fields, status, words in cases:
        answer = page.request.post(
            "/institutions/HOSP/admin/routes", form={"csrf_token": token, **fields}, max_redirects=0
        )
        assert answer.status == status, (fields, answer.status)
        assert words in answer.text()
    made = page.request.post(
        "/institutions/HOSP/admin/routes",
        form={"csrf_token": token, "called_ae_title": "TWICE"},
        max_redirects=0,
    )
    assert made.status == 303
    twice = page.request.post(
        "/institutions/HOSP/admin/routes",
        form={"csrf_token": token, "called_ae_title": "TWICE"},
        max_redirects=0,
    )
    assert twice.status == 409 and "taken" in twice.text()
    assert set(_routes(world)) == {"TWICE"}


def test_routes_are_refused_to_who_may_not_administer_them(world: World) -> None:
    add_person(world, "clin-admin", {"CLIN": "admin"})
    made = world.api("clin-admin", "POST", "/routes",
                     {"called_ae_title": "TO_CLINIC", "destination": "CLIN"})  # fmt: skip
    assert made.status_code == 201, made.text
    clin_route = made.json()["pk"]
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/routes")
    token = csrf(admin)
    ours = admin.request.post(
        "/institutions/HOSP/admin/routes",
        form={"csrf_token": token, "called_ae_title": "TO_HARBOUR"},
        max_redirects=0,
    )
    assert ours.status == 303
    hosp_route = _routes(world)["TO_HARBOUR"]["pk"]
    for target in (
        f"/institutions/HOSP/admin/routes/{clin_route}/remove",  # CLIN's, through HOSP's page
        f"/institutions/CLIN/admin/routes/{clin_route}/remove",  # not their institution
    ):
        answer = admin.request.post(target, form={"csrf_token": token}, max_redirects=0)
        assert answer.status == 404, target
    answer = admin.goto("/institutions/CLIN/admin/routes")
    assert answer is not None and answer.status == 404
    answer = admin.request.post(
        f"/institutions/HOSP/admin/routes/{hosp_route}/remove", form={}, max_redirects=0
    )
    assert answer.status == 403  # no CSRF token
    for who in ("hosp-radiologist", "hosp-requester"):  # a member, a request-only person
        page = world.page(who)
        answer = page.goto("/institutions/HOSP/admin/routes")
        assert answer is not None and answer.status == 403, who
        page.goto("/institutions/HOSP")
        theirs = csrf(page)
        for target, fields in (
            ("/institutions/HOSP/admin/routes", {"called_ae_title": "SNEAKY"}),
            (f"/institutions/HOSP/admin/routes/{hosp_route}/remove", {}),
        ):
            answer = page.request.post(
                target, form={"csrf_token": theirs, **fields}, max_redirects=0
            )
            assert answer.status == 403, (who, target)
    other = world.page("far-radiologist")
    answer = other.goto("/institutions/HOSP/admin/routes")
    assert answer is not None and answer.status == 404
    assert set(_routes(world)) == {"TO_HARBOUR"}
    assert set(_routes(world, "clin-admin")) == {"TO_CLINIC"}
