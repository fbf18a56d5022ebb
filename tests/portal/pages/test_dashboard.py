"""An institution's dashboard and the person's email choices, as people of two institutions."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from policy import store
from tests.portal.pages.conftest import World, assert_accessible, snapshot


def test_the_worklist_shows_urgent_first_with_counts_filters_and_the_url(world: World) -> None:
    world.send("chest", note="routine follow-up")
    world.send("head", priority="urgent")
    page = world.page("hosp-radiologist")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/institutions/HOSP$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Harbour Hospital: Worklist")
    nav = page.get_by_role("navigation", name="Lists of Harbour Hospital")
    expect(nav.get_by_role("link", name="Worklist 2")).to_have_attribute("aria-current", "page")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Doe, Head")  # urgent first
    expect(rows.nth(0)).to_contain_text("urgent")
    expect(rows.nth(1)).to_contain_text("Doe, Chest")
    expect(rows.nth(0)).to_contain_text("CLIN")
    arrived = rows.nth(0).locator("td").last.locator("time")
    expect(arrived).to_contain_text(re.compile(r"\d{4} \d\d:\d\d (GMT|BST)"))
    assert_accessible(page)
    snapshot(page, "dashboard-worklist")
    page.get_by_label("Priority").select_option("routine")
    expect(page).to_have_url(re.compile(r"priority=routine"))
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text("Doe, Chest")
    page.reload()  # the filter lives in the URL: shareable, bookmarkable
    expect(page.get_by_label("Priority")).to_have_value("routine")
    expect(rows).to_have_count(1)
    assert "PAT-" not in page.url and "Doe" not in page.url


def test_the_sender_sees_its_sent_transfers_and_not_the_receivers_lists(world: World) -> None:
    world.send("chest")
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN?view=sent")
    expect(page.get_by_role("heading", level=1)).to_have_text("Clinic North: Sent transfers")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    expect(page.locator("#results tbody tr").first).to_contain_text("HOSP")
    assert_accessible(page)
    places = page.get_by_role("navigation", name="Your institutions")
    expect(places.get_by_role("link")).to_have_count(1)  # no switcher entry for HOSP
    refused = page.goto("/institutions/HOSP")
    assert refused is not None and refused.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    assert_accessible(page)
    missing = page.goto("/institutions/NOPE")
    assert missing is not None and missing.status == 404


def test_a_request_only_person_sees_only_requests(world: World) -> None:
    world.send("chest")
    page = world.page("hosp-requester")
    page.goto("/institutions/HOSP")
    expect(page.get_by_role("heading", level=1)).to_have_text("Harbour Hospital: Our requests")
    nav = page.get_by_role("navigation", name="Lists of Harbour Hospital")
    expect(nav.get_by_role("link")).to_have_text(["Our requests 0", "New request"])
    assert_accessible(page)
    for view in ("worklist", "sent", "incoming"):
        refused = page.goto(f"/institutions/HOSP?view={view}")
        assert refused is not None and refused.status == 404, view


def test_bad_filters_are_a_clear_refusal_not_an_error(world: World) -> None:
    page = world.page("hosp-radiologist")
    for query in ("sort=sideways", "priority=whenever", "offset=-1", "order=up"):
        answer = page.goto(f"/institutions/HOSP?{query}")
        assert answer is not None and answer.status in (200, 400), query
        expect(page.get_by_role("heading", level=1)).not_to_have_text("Internal Server Error")
    answer = page.goto("/institutions/HOSP?sort=sideways")
    assert answer is not None and answer.status == 400
    expect(page.get_by_role("alert")).to_contain_text("sort")


def test_choose_which_emails_to_get(world: World) -> None:
    page = world.page("hosp-radiologist")
    page.goto("/account/notifications")
    expect(page.get_by_label("What I did, and what is addressed to me")).to_be_checked()
    assert_accessible(page)
    refused = page.request.post("/account/notifications", form={"choice": "none"})
    assert refused.status == 403  # no CSRF token
    page.get_by_label("Only what went wrong").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Your choice was saved.")
    expect(page.get_by_label("Only what went wrong")).to_be_checked()
    mine = world.api("hosp-radiologist", "GET", "/me/notifications").json()
    assert mine["choice"] == "failures"


def test_a_long_worklist_is_paged_with_its_filters_kept(world: World) -> None:
    for _ in range(21):
        world.send("chest")
    page = world.page("hosp-radiologist")
    page.goto("/institutions/HOSP?priority=routine")
    expect(page.locator("#results > p").first).to_have_text("21 found, showing 1 to 20.")
    expect(page.locator("#results tbody tr")).to_have_count(20)
    page.get_by_role("link", name="Next page").click()
    expect(page).to_have_url(re.compile(r"priority=routine.*offset=20|offset=20.*priority=routine"))
    expect(page.locator("#results tbody tr")).to_have_count(1)
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    assert_accessible(page)
    page.get_by_role("link", name="Previous page").click()
    expect(page.locator("#results tbody tr")).to_have_count(20)


def test_a_security_institution_of_the_person_joins_their_worklist(world: World) -> None:
    engine = world.server.archive.engine
    card = store.create_institution(engine, "HOSP-CARD", "Cardiology", parent_pk=world.pks["HOSP"])
    store.create_destination_rule(engine, card.pk or 0, sender_institution_pk=world.pks["CLIN"])
    radiologist = store.find_user(engine, world.email("hosp-radiologist"))
    store.set_membership(engine, radiologist.pk or 0, card.pk or 0, ["receiver", "viewer"])
    body = {"institution": "CLIN", "destination": "HOSP-CARD", "send": True,
            "studies": [world.studies["head"].study_uid]}  # fmt: skip
    assert world.api("clin-sender", "POST", "/transfers", body).status_code == 201
    page = world.page("hosp-radiologist")
    page.goto("/institutions/HOSP")
    places = page.get_by_role("navigation", name="Your institutions")
    expect(places.get_by_role("link", name="Cardiology security")).to_be_visible()
    expect(page.locator("#results tbody tr").first).to_contain_text("Doe, Head")
    places.get_by_role("link", name="Cardiology security").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Cardiology: Worklist")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    assert_accessible(page)


def test_find_a_patient_on_the_worklist_without_the_patient_in_the_url(world: World) -> None:
    world.send("chest")
    world.send("head")
    page = world.page("hosp-radiologist")
    page.goto("/institutions/HOSP")
    page.get_by_text("Find a patient on the worklist…").click()
    page.get_by_label("Patient ID").fill("PAT-2")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#results tbody tr")).to_have_count(1)
    expect(page.locator("#results tbody tr").first).to_contain_text("Doe, Head")
    assert "PAT-2" not in page.url
    expect(page.get_by_label("Patient ID")).to_have_value("PAT-2")
    assert_accessible(page)
    page.get_by_label("Patient ID").fill("")
    page.get_by_label("Family name starts with").fill("doe")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#results tbody tr")).to_have_count(2)


def test_the_owner_s_hold_shows_as_held_on_the_receiver_s_worklist(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    from exchange.holds import NewHold, place_hold

    chest = world.send("chest")
    world.send("head")
    until = datetime.now(UTC) + timedelta(days=100)
    hold = NewHold(world.pks["CLIN"], "legal claim", until,
                   study_uid=world.studies["chest"].study_uid)  # fmt: skip
    place_hold(world.server.archive.engine, hold, actor="test", now=datetime.now(UTC))
    page = world.page("hosp-radiologist")
    page.goto("/institutions/HOSP")
    rows = page.locator("#results tbody tr")
    held = rows.filter(has_text="Doe, Chest")
    state = held.get_by_role("cell").nth(4)
    expect(state).to_contain_text("held: not deleted while the hold lasts")
    expect(rows.filter(has_text="Doe, Head")).to_contain_text("deleted in 15 days")
    expect(rows.filter(has_text="Doe, Head")).not_to_contain_text("held")
    assert_accessible(page)
    page.goto(f"/transfers/{chest}")
    facts = page.locator("#transfer-facts")
    expect(facts).to_contain_text("Retention")
    expect(facts).to_contain_text("held: not deleted while the hold lasts")
    assert_accessible(page)
    sender = world.page("clin-sender")  # the owner's own page: no receiver's countdown
    sender.goto(f"/transfers/{chest}")
    expect(sender.locator("#transfer-facts")).not_to_contain_text("Retention")
