"""The front page, signing in and out, registering, and the viewer's sign-in first."""

from __future__ import annotations

import re

import httpx
import orjson
from playwright.sync_api import expect
from sqlmodel import Session, select

from exchange.notifications import NOTIFY
from foundation.jobs import Job
from tests.conftest import production_passwords
from tests.policy._people import PASSWORD
from tests.portal.pages.conftest import World, assert_accessible, snapshot


@production_passwords  # one sign-in through the form verifies a hash of production cost
def test_the_front_page_says_what_ferry_is_and_signs_in_with_the_form(world: World) -> None:
    page = world.anonymous()
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("imaging studies")
    expect(page.get_by_role("link", name="Register")).to_be_visible()
    assert_accessible(page)
    snapshot(page, "front-page")
    page.get_by_label("Email").fill(world.email("hosp-radiologist"))
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")
    assert_accessible(page)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP$"))
    expect(page.get_by_role("banner")).to_contain_text("Hosp Radiologist")


def test_a_page_for_people_sends_the_anonymous_to_sign_in_and_back(world: World) -> None:
    page = world.anonymous()
    page.goto("/account/notifications")
    expect(page).to_have_url(re.compile(r"/sign-in\?next=/account/notifications$"))
    assert_accessible(page)
    page.get_by_label("Email").fill(world.email("clin-sender"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/account/notifications$"))


def test_the_viewer_sends_a_person_not_signed_in_to_sign_in_and_back(world: World) -> None:
    page = world.anonymous()
    page.goto("/viewer/")
    expect(page).to_have_url(re.compile(r"/sign-in\?next=/viewer/$"))
    page.get_by_label("Email").fill(world.email("hosp-radiologist"))
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_response(re.compile(r"/viewer/$")) as back:
        page.get_by_role("button", name="Sign in").click()
    assert back.value.url == f"{world.base}/viewer/"  # the viewer itself may not be installed


def test_register_and_see_the_registration_waiting_then_approved(world: World) -> None:
    page = world.anonymous()
    page.goto("/")
    page.get_by_role("link", name="Register").click()
    assert_accessible(page)
    page.get_by_label("Your name").fill("Nora New")
    page.get_by_label("Email").fill("nora@ferry.test")
    page.get_by_label("Institution code").fill("HOSP")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Registration received")
    expect(page.locator(".facts")).to_contain_text("Waiting for an administrator's approval")
    assert_accessible(page)
    assert "registration-waiting" in _emails_queued(world)  # HOSP's administrators are told
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Email").fill("nora@ferry.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Harbour Hospital is waiting")
    waiting = world.api("hosp-admin", "GET", "/registrations").json()
    [mine] = [r for r in waiting if r["email"] == "nora@ferry.test"]
    approved = world.api("hosp-admin", "POST", f"/registrations/{mine['pk']}/approve",
                         {"roles": ["viewer"]})  # fmt: skip
    assert approved.status_code == 200, approved.text
    assert "registration-approved" in _emails_queued(world)  # and so is Nora
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP$"))


def _emails_queued(world: World) -> list[str]:
    with Session(world.server.archive.engine) as session:
        jobs = session.exec(select(Job).where(Job.kind == NOTIFY)).all()
    return [orjson.loads(job.payload)["event"] for job in jobs]


def test_forms_without_their_token_are_refused(world: World) -> None:
    with httpx.Client(base_url=world.base) as http:
        form = {"email": world.email("clin-sender"), "password": PASSWORD}
        assert http.post("/sign-in", data=form).status_code == 403  # no form token
        assert "ferry_session" not in http.cookies
        registered = {"email": "x@ferry.test", "name": "X", "institution": "HOSP",
                      "password": PASSWORD, "password_again": PASSWORD}  # fmt: skip
        assert http.post("/register", data=registered).status_code == 403
    page = world.page("clin-sender")
    signed_out = page.request.post("/sign-out", form={}, max_redirects=0)
    assert signed_out.status == 403  # no CSRF token: still signed in
    page.goto("/")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/account/notifications")
    expect(page).to_have_url(re.compile(r"/sign-in"))
