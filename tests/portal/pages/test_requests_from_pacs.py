"""Answering a request from the PACS, in the browser: the answering person searches one of
their institution's nodes (a Q/R SCP) with the request's identifiers, picks, answers; Ferry
fetches the studies by a job and they arrive on the requester's worklist."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from dimse.context import BridgeContext
from ferry.background import build_worker
from tests.dimse.test_remote import RemotePacs
from tests.portal.pages.conftest import PACS_PATIENT as PATIENT
from tests.portal.pages.conftest import World, assert_accessible


def test_answer_a_request_from_our_pacs(world: World, pacs: RemotePacs) -> None:
    asking = world.page("hosp-requester")
    asking.goto("/institutions/HOSP/requests/new")
    asking.get_by_label("Ask").select_option(label="Clinic North (CLIN)")
    asking.get_by_label("Patient ID", exact=True).fill(PATIENT)
    asking.get_by_label("Clinical reason").fill("All priors, please")
    asking.get_by_role("button", name="Send the request").click()
    expect(asking.get_by_role("status")).to_have_text("Your request was sent.")
    request_page = asking.url

    answerer = world.page("clin-sender")
    answerer.goto("/institutions/CLIN?view=incoming")
    answerer.locator("#results tbody tr").first.get_by_role("link").click()
    answerer.get_by_label("Search in").select_option(label="Our node CLIN_PACS")
    answerer.get_by_role("button", name="Search with the request's identifiers").click()
    matches = answerer.locator("table").first.locator("tbody tr")
    expect(matches).to_have_count(2)  # the other patient's study is not offered
    expect(matches.first).to_contain_text(PATIENT)
    assert_accessible(answerer)
    answerer.get_by_role("checkbox", name="Pick CT ACC-P1").check()
    answerer.get_by_role("checkbox", name="Pick CT ACC-P2").check()
    answerer.get_by_role("button", name="Answer with the picked studies").click()
    fetching = "in progress: fetching 2 studies from CLIN_PACS"
    expect(answerer.locator("#request-facts .status")).to_contain_text(fetching)

    worker = build_worker(BridgeContext(world.server.settings.dimse(), world.server.archive),
                          world.server.settings)  # fmt: skip
    assert worker.run_until_idle() >= 1  # Ferry fetches from the PACS, then sends
    answerer.reload()
    expect(answerer.locator("#request-facts .status")).to_contain_text("answered")
    asking.goto(request_page)
    expect(asking.locator("#request-facts .status")).to_contain_text("answered")
    radiologist = world.page("hosp-radiologist")
    radiologist.goto("/institutions/HOSP")
    rows = radiologist.locator("#results tbody tr")
    expect(rows.first).to_contain_text("Pacs, Paula")
    radiologist.get_by_role("link", name=re.compile("Pacs, Paula")).first.click()
    expect(radiologist.get_by_role("region", name="Patient").first).to_contain_text(PATIENT)
    assert_accessible(radiologist)
