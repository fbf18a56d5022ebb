"""Asking for imaging and answering, clicked by people of two institutions; and refusals."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlmodel import Session, select

from exchange.request_models import ImagingRequest
from tests.portal.pages.conftest import World, assert_accessible, snapshot


def _ask(world: World, **fields: str) -> object:
    """hosp-requester asks CLIN for PAT-1's CT through the form; the request's page."""
    page = world.page("hosp-requester")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/institutions/HOSP/requests/new$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Ask another institution for imaging")
    page.get_by_label("Ask").select_option(label="Clinic North (CLIN)")
    page.get_by_label("Patient ID", exact=True).fill(fields.get("patient_id", "PAT-1"))
    page.get_by_label("Modalities").fill("CT")
    page.get_by_label("Clinical reason").fill("Follow-up of a nodule")
    page.get_by_label("Urgency").select_option("urgent")
    return page


def test_ask_then_answer_from_the_archive(world: World) -> None:
    page = _ask(world)
    assert_accessible(page)
    snapshot(page, "request-new")
    page.get_by_role("button", name="Send the request").click()
    expect(page.get_by_role("status")).to_have_text("Your request was sent.")
    expect(page.locator("#request-facts .status")).to_have_text("open")
    expect(page.get_by_role("region", name="Patient")).to_contain_text("PAT-1")
    for name in ("Search with the request's identifiers", "Reject the request"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    assert_accessible(page)
    answerer = world.page("clin-sender")
    answerer.goto("/institutions/CLIN?view=incoming")
    nav = answerer.get_by_role("navigation", name="Lists of Clinic North")
    expect(nav.get_by_role("link", name="Requests to us 1")).to_be_visible()
    answerer.locator("#results tbody tr").first.get_by_role("link").click()
    answerer.get_by_role("button", name="Search with the request's identifiers").click()
    expect(answerer.get_by_text("PatientID=PAT-1")).to_be_visible()
    matches = answerer.locator("table").first.locator("tbody tr")
    expect(matches).to_have_count(1)
    expect(matches.first).to_contain_text("Doe, Chest")
    assert_accessible(answerer)
    snapshot(answerer, "request-answer")
    answerer.get_by_role("checkbox", name="Pick Chest study").check()
    answerer.get_by_role("button", name="Answer with the picked studies").click()
    expect(answerer.get_by_role("status")).to_have_text("The request was answered.")
    expect(answerer.locator("#request-facts .status")).to_contain_text("answered")
    expect(answerer.get_by_role("link", name="Transfer 1")).to_be_visible()
    page.reload()
    expect(page.locator("#request-facts .status")).to_contain_text("answered")
    radiologist = world.page("hosp-radiologist")
    radiologist.goto("/institutions/HOSP")
    expect(radiologist.locator("#results tbody tr").first).to_contain_text("Doe, Chest")
    expect(radiologist.locator("#results tbody tr").first).to_contain_text("urgent")


def test_reject_with_a_reason_and_the_requester_reads_it(world: World) -> None:
    page = _ask(world)
    page.get_by_role("button", name="Send the request").click()
    request_url = page.url.split("?")[0]
    answerer = world.page("clin-sender")
    answerer.goto(request_url)
    answerer.get_by_text("Reject…").click()
    answerer.get_by_label("Reason").fill("No consent on file")
    answerer.get_by_role("button", name="Reject the request").click()
    expect(answerer.get_by_role("status")).to_have_text("The request was rejected.")
    page.goto(request_url)
    expect(page.locator("#request-facts .status")).to_have_text("rejected: No consent on file")
    expect(page.get_by_text("Cancel this request…")).to_have_count(0)


def test_nothing_found_and_cancel(world: World) -> None:
    page = _ask(world, patient_id="NOBODY")
    page.get_by_role("button", name="Send the request").click()
    first = page.url.split("?")[0]
    answerer = world.page("clin-sender")
    answerer.goto(first)
    answerer.get_by_role("button", name="Search with the request's identifiers").click()
    expect(answerer.get_by_text("Nothing found.")).to_be_visible()
    answerer.get_by_text("Nothing found…").click()
    answerer.get_by_role("button", name="Answer: nothing found").click()
    expect(answerer.get_by_role("status")).to_have_text(
        "The requester was told that nothing was found."
    )
    page = _ask(world)
    page.get_by_role("button", name="Send the request").click()
    page.get_by_text("Cancel this request…").click()
    page.get_by_role("button", name="Cancel the request").click()
    expect(page.get_by_role("status")).to_have_text("The request was cancelled.")
    expect(page.locator("#request-facts .status")).to_contain_text("cancelled")


def test_a_request_without_a_patient_is_refused_with_the_form_kept(world: World) -> None:
    page = world.page("hosp-requester")
    page.goto("/institutions/HOSP/requests/new")
    page.get_by_label("Ask").select_option("CLIN")
    page.get_by_label("Details").fill("all priors")
    page.get_by_role("button", name="Send the request").click()
    expect(page.get_by_role("alert")).to_contain_text("name the patient")
    expect(page.get_by_label("Details")).to_have_value("all priors")
    assert_accessible(page)


def test_who_may_not_see_or_answer_a_request(world: World) -> None:
    page = _ask(world)
    page.get_by_role("button", name="Send the request").click()
    request_id = page.url.split("?")[0].rsplit("/", 1)[1]
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for action in ("answer", "search", "reject", "nothing-found"):  # the requester may not answer
        form = {"csrf_token": token, "study": "1.2.3", "reason": "x"}
        answer = page.request.post(f"/requests/{request_id}/{action}", form=form)
        assert answer.status == 403, action
    assert page.request.post(f"/requests/{request_id}/cancel", form={}).status == 403  # no CSRF
    far = world.page("far-radiologist")
    for path in (f"/requests/{request_id}", "/requests/nothing-of-the-sort", "/requests/%2e"):
        answer = far.goto(path)
        assert answer is not None and answer.status == 404, path
    far.goto("/account/notifications")
    far_token = far.locator("input[name=csrf_token]").first.get_attribute("value")
    for action in ("answer", "search", "reject", "nothing-found", "cancel"):
        form = {"csrf_token": far_token, "study": "1.2.3", "reason": "x"}
        answer = far.request.post(f"/requests/{request_id}/{action}", form=form)
        assert answer.status == 404, action
    sender = world.page("clin-sender")  # answers at CLIN, may not ask for it
    refused = sender.goto("/institutions/CLIN/requests/new")
    assert refused is not None and refused.status == 404
    state = world.api("clin-sender", "GET", f"/requests/{request_id}").json()
    assert state["status"] == "open"


def test_an_emails_link_opens_the_request_for_its_parties_only(world: World) -> None:
    page = _ask(world)
    page.get_by_role("button", name="Send the request").click()
    request_id = page.url.split("?")[0].rsplit("/", 1)[1]
    with Session(world.server.archive.engine) as session:
        query = select(ImagingRequest.pk).where(ImagingRequest.public_id == request_id)
        pk = session.exec(query).one()
    answerer = world.page("clin-sender")
    answerer.goto(f"/portal/requests/{pk}")
    expect(answerer).to_have_url(re.compile(rf"/requests/{request_id}$"))
    far = world.page("far-radiologist")
    for path in (f"/portal/requests/{pk}", f"/portal/requests/{pk + 99}"):
        answer = far.goto(path)
        assert answer is not None and answer.status == 404, path
