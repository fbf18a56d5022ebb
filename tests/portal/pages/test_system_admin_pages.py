"""A system administrator who belongs to no institution opens any institution's dashboard,
administration and oversight pages (the API already let them); patient lists still need a
membership, and an institution's administrator still finds no other institution's pages."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.portal.pages._people import add_person
from tests.portal.pages.conftest import World, assert_accessible


def test_a_system_administrator_opens_an_institution_they_do_not_belong_to(world: World) -> None:
    add_person(world, "root", {}, system_admin=True)
    page = world.page("root")
    page.goto("/institutions/CLIN")  # no list of patients for them: administration
    expect(page).to_have_url(re.compile(r"/institutions/CLIN/admin$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Clinic North")
    assert_accessible(page)
    page.get_by_role("link", name="People and roles").click()
    expect(page.get_by_role("main")).to_contain_text("clin-sender@ferry.test")
    page.get_by_role("link", name="Direct-push routes").click()
    expect(page.get_by_role("table", name="Routes into Clinic North")).to_be_visible()
    page.get_by_role("link", name="Failed jobs and transfers").click()
    expect(page.get_by_text("you are a system administrator")).to_be_visible()
    page.get_by_role("link", name="Oversight").click()
    expect(page).to_have_url(re.compile(r"/institutions/CLIN/oversight"))
    assert_accessible(page)
    for path in ("/oversight/audit", "/oversight/statistics", "/admin/nodes", "/admin/rules"):
        answer = page.goto(f"/institutions/CLIN{path}")
        assert answer is not None and answer.status == 200, path
    answer = page.goto("/institutions/CLIN/send")  # sending is a member's
    assert answer is not None and answer.status == 404
    answer = page.goto("/institutions/NOPE/admin")
    assert answer is not None and answer.status == 404


def test_an_institution_administrator_finds_no_other_institutions_pages(world: World) -> None:
    admin = world.page("hosp-admin")
    for path in ("", "/admin", "/admin/people", "/admin/routes", "/admin/jobs", "/oversight",
                 "/oversight/audit"):  # fmt: skip
        answer = admin.goto(f"/institutions/CLIN{path}")
        assert answer is not None and answer.status == 404, path
    answer = admin.goto("/institutions/HOSP/admin")
    assert answer is not None and answer.status == 200
