"""Oversight pages: the transactions, the audit trail and statistics of an institution, for
its administrators and auditors; a person with no other list lands on them; everyone else is
refused as the oversight API refuses them."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import update
from sqlmodel import col

from exchange.models import Transfer
from policy import store
from tests.policy._people import change_user
from tests.portal.pages.conftest import World, assert_accessible, password_hash, snapshot

PAGES = ("transactions", "audit", "statistics")


def _auditor(world: World, who: str = "hosp-auditor", code: str = "HOSP") -> Any:
    """A person whose only role is `auditor`, signed in."""
    engine = world.server.archive.engine
    user = store.create_user(engine, world.email(who), name="Hosp Auditor")
    change_user(engine, user.pk or 0, password_hash=password_hash())
    store.set_membership(engine, user.pk or 0, world.pks[code], ["auditor"])
    return world.page(who)


def _csv(page: Any, href: str) -> list[dict[str, str]]:
    answer = page.request.get(href)
    assert answer.status == 200, answer.text()
    assert answer.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(answer.text())))


def download_csv(page: Any) -> list[dict[str, str]]:
    """The rows of the CSV the page's "Download CSV" button gives (a posted form)."""
    with page.expect_download() as got:
        page.get_by_role("button", name="Download CSV").click()
    with open(got.value.path(), encoding="utf-8") as downloaded:
        return list(csv.DictReader(downloaded))


def test_the_transaction_summary_filters_sorts_and_downloads(world: World) -> None:
    chest = world.send("chest", priority="urgent")
    world.send("head")
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP")
    admin.get_by_role("link", name="Oversight").click()
    expect(admin).to_have_url(re.compile(r"/institutions/HOSP/oversight$"))
    expect(admin.get_by_role("heading", level=1)).to_have_text("Harbour Hospital: Transactions")
    table = admin.get_by_role("table", name="Transactions")
    expect(table.get_by_role("row", name=re.compile("PAT-1"))).to_contain_text("CLIN")
    expect(table.get_by_role("row", name=re.compile("PAT-2"))).to_contain_text("received")
    assert_accessible(admin)
    snapshot(admin, "oversight-transactions")
    admin.get_by_label("Patient ID").fill("PAT-1")
    admin.get_by_label("Direction").select_option("received")
    admin.get_by_label("Sort by").select_option("patient_id")
    admin.get_by_role("button", name="Show").click()
    expect(admin.get_by_text("1 found")).to_be_visible()
    expect(table.get_by_role("row", name=re.compile("PAT-2"))).to_have_count(0)
    assert "PAT-1" not in admin.url  # posted: never in the address bar
    expect(admin.get_by_label("Patient ID")).to_have_value("PAT-1")
    rows = download_csv(admin)
    assert [(r["id"], r["patient_id"], r["direction"]) for r in rows] == [
        (chest, "PAT-1", "received")
    ]
    admin.get_by_label("From (day)").fill("2001-01-02")
    admin.get_by_label("To (day)").fill("2001-01-01")
    with admin.expect_response(re.compile("oversight/transactions")) as answered:
        admin.get_by_role("button", name="Show").click()
    assert answered.value.status == 400  # a bad range: the reason, not a crash
    expect(admin.get_by_role("alert")).to_contain_text("'from' must come before 'to'")


def test_an_auditor_finds_a_patients_story_in_the_audit_trail(world: World) -> None:
    transfer = world.send("chest")
    receiver = world.page("hosp-radiologist")
    receiver.goto(f"/transfers/{transfer}")
    zipped = receiver.request.get(f"/api/transfers/{transfer}/download.zip")
    assert zipped.status == 200
    auditor = _auditor(world)
    auditor.goto("/institutions/HOSP")  # no list of their own: the oversight pages
    expect(auditor).to_have_url(re.compile(r"/institutions/HOSP/oversight$"))
    auditor.get_by_role("link", name="Audit trail").click()
    auditor.get_by_label("Patient ID").fill("PAT-1")
    auditor.get_by_role("button", name="Search").click()
    expect(auditor.get_by_label("Patient ID")).to_have_value("PAT-1")
    assert "PAT-1" not in auditor.url
    events = auditor.get_by_role("table", name="Audit events")
    downloaded = events.get_by_role("row", name=re.compile("download"))
    expect(downloaded).to_contain_text("user:hosp-radiologist@ferry.test")
    expect(downloaded).to_contain_text("ACC-PAT-1")
    expect(events.get_by_role("row", name=re.compile("user:clin-sender")).first).to_contain_text(
        "transfer"
    )
    expect(events.get_by_role("row", name=re.compile("PAT-2"))).to_have_count(0)
    assert_accessible(auditor)
    snapshot(auditor, "oversight-audit")
    rows = download_csv(auditor)
    assert {"transfer", "download"} <= {r["action"] for r in rows}
    assert {r["patient_id"] for r in rows} == {"PAT-1"}
    downloads = [r for r in rows if r["action"] == "download"]
    assert downloads[0]["actor"] == "user:hosp-radiologist@ferry.test"
    assert downloads[0]["transaction"] == transfer
    downloaded.get_by_role("link", name=f"Events of transaction {transfer}").click()
    expect(auditor.get_by_role("textbox", name="Transaction")).to_have_value(transfer)
    expect(events.get_by_role("row", name=re.compile("download"))).to_have_count(1)
    auditor.get_by_role("link", name="Transactions").click()
    transactions = auditor.get_by_role("table", name="Transactions")
    expect(transactions.get_by_role("row", name=re.compile("PAT-1"))).to_contain_text("downloaded")
    assert_accessible(auditor)


def test_statistics_show_volumes_and_turnaround_with_bars(world: World) -> None:
    transfer = world.send("chest")
    world.send("head")
    receiver = world.page("hosp-radiologist")
    assert receiver.request.get(f"/api/transfers/{transfer}/download.zip").status == 200
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/oversight")
    admin.get_by_role("link", name="Statistics").click()
    volumes = admin.get_by_role("table", name="Volumes")
    expect(volumes.get_by_role("row", name=re.compile(r"received CLIN CT"))).to_contain_text("1")
    expect(volumes.get_by_role("row", name=re.compile(r"received CLIN MR"))).to_be_visible()
    expect(volumes.get_by_role("meter").first).to_have_attribute("max", "1")
    turnaround = admin.get_by_role("table", name="Turnaround")
    downloaded = turnaround.get_by_role("row", name=re.compile("Sent to downloaded received"))
    expect(downloaded.get_by_role("meter")).to_have_count(2)  # median and 90th percentile
    expect(downloaded).to_contain_text(re.compile(r"\d+ (s|min)"))
    expect(admin.get_by_role("table", name="Failures")).to_contain_text("No failure")
    expect(admin.get_by_text("days, weeks and months in Europe/London")).to_be_visible()
    assert_accessible(admin)
    snapshot(admin, "oversight-statistics")
    admin.get_by_label("Per", exact=True).select_option("month")
    admin.get_by_role("button", name="Show").click()
    expect(admin).to_have_url(re.compile(r"interval=month"))
    expect(volumes.get_by_role("columnheader").first).to_have_text("Month")
    href = admin.get_by_role("link", name="Download CSV").get_attribute("href")
    assert href and "interval=month" in href
    rows = _csv(admin, href)
    assert {r["section"] for r in rows} >= {"volume", "turnaround"}


def test_who_may_not_oversee_is_refused(world: World) -> None:
    paths = [f"/institutions/HOSP/oversight/{view}" for view in PAGES]
    for who in ("hosp-radiologist", "hosp-requester"):  # members without the right: why
        page = world.page(who)
        page.goto("/institutions/HOSP")
        expect(page.get_by_role("link", name="Oversight")).to_have_count(0)
        for path in ["/institutions/HOSP/oversight", *paths]:
            answer = page.goto(path)
            assert answer is not None and answer.status == 403, (who, path)
        csv = page.request.get("/api/oversight/transactions?institution=HOSP&format=csv")
        assert csv.status == 403
    other = world.page("far-radiologist")  # another institution: as if HOSP did not exist
    for path in paths:
        answer = other.goto(path)
        assert answer is not None and answer.status == 404, path
    admin = world.page("hosp-admin")  # beyond their institutions
    for path in paths:
        answer = admin.goto(path.replace("HOSP", "CLIN"))
        assert answer is not None and answer.status == 404, path
    admin.goto("/institutions/HOSP/admin")
    expect(admin.get_by_role("link", name="Oversight")).to_be_visible()
    auditor = _auditor(world)  # reads oversight and nothing else
    auditor.goto("/institutions/HOSP/oversight")
    expect(auditor.get_by_role("link", name="Back to the lists")).to_have_count(0)
    for path in ("/institutions/CLIN/oversight", "/institutions/HOSP/admin"):
        answer = auditor.goto(path)
        assert answer is not None and answer.status in (403, 404), path
    answer = auditor.goto("/institutions/HOSP?view=worklist")
    assert answer is not None and answer.url.endswith("/institutions/HOSP/oversight")


def test_bad_filters_get_a_reason_and_the_pages_still_answer(world: World) -> None:
    page = world.page("hosp-admin")
    base = "/institutions/HOSP/oversight"
    cases = [
        (f"{base}/transactions?sort=nonsense", "sort"),
        (f"{base}/transactions?direction=sideways", "direction"),
        (f"{base}/transactions?from=2026-13-01", "from"),
        (f"{base}/audit?from=yesterday", "from"),
        (f"{base}/audit?to=2001-01-01&from=2001-02-01", "'from' must come before 'to'"),
        (f"{base}/statistics?interval=year", "interval"),
    ]
    for path, reason in cases:
        answer = page.goto(path)
        assert answer is not None and answer.status == 400, path
        expect(page.get_by_role("alert")).to_contain_text(reason)
    for path in (f"{base}/transactions?offset=x", f"{base}/audit?before_pk=-1", base):
        answer = page.goto(path)
        assert answer is not None and answer.status == 200, path
    assert_accessible(page)


def test_the_audit_trail_and_transactions_page_on(world: World) -> None:
    world.send("chest")
    world.send("head")
    for _ in range(52):  # every reading is itself an event of HOSP's trail
        answer = world.api("hosp-admin", "GET", "/oversight/statistics?institution=HOSP")
        assert answer.status_code == 200
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/oversight/audit?user=user:hosp-admin@ferry.test")
    events = admin.get_by_role("table", name="Audit events")
    expect(events.locator("tbody tr")).to_have_count(50)
    expect(events.locator("tbody tr", has_text="login")).to_have_count(1)  # the newest but one
    admin.get_by_role("link", name="Older events").click()
    expect(admin).to_have_url(re.compile(r"before_pk=\d+"))
    expect(admin.get_by_role("textbox", name="User")).to_have_value("user:hosp-admin@ferry.test")
    # 54 events: 52 readings, the sign-in (HOSP's, by the admin's membership), the first page's
    expect(events.locator("tbody tr")).to_have_count(4)
    expect(admin.get_by_role("link", name="Older events")).to_have_count(0)
    assert_accessible(admin)
    admin.get_by_role("link", name="Newest events").click()
    expect(events.locator("tbody tr")).to_have_count(50)
    admin.goto("/institutions/HOSP/oversight/transactions?sort=patient_id&order=asc&offset=1")
    rows = admin.get_by_role("table", name="Transactions").locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("PAT-2")
    admin.get_by_role("link", name="Previous page").click()
    expect(admin).not_to_have_url(re.compile("offset"))
    expect(admin).to_have_url(re.compile("sort=patient_id"))
    expect(rows.first).to_contain_text("PAT-1")


def test_counts_read_one_study_and_two_studies(world: World) -> None:
    world.send("chest")
    body = {
        "institution": "CLIN",
        "destination": "HOSP",
        "studies": [world.studies["chest"].study_uid, world.studies["head"].study_uid],
        "send": True,
    }
    both = world.api("clin-sender", "POST", "/transfers", body)
    assert both.status_code == 201, both.text
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/oversight/transactions?sort=created&order=asc")
    rows = admin.get_by_role("table", name="Transactions").locator("tbody tr")
    expect(rows.nth(0).get_by_role("cell").nth(1)).to_have_text("transfer1 study")
    expect(rows.nth(1).get_by_role("cell").nth(1)).to_have_text("transfer2 studies")
    expect(admin.get_by_text("2 found")).to_be_visible()
    expect(admin.get_by_text("1 studies")).to_have_count(0)


def test_a_transfer_that_ended_is_found_by_the_state_it_ended_from(world: World) -> None:
    """A transfer that failed and was later deleted (retention ends every transfer) is found
    among the failed, and its row says both."""
    failed = world.send("chest")
    engine = world.server.archive.engine
    with engine.begin() as connection:  # as the sweeper leaves a failed transfer it ends
        connection.execute(
            update(Transfer).where(col(Transfer.public_id) == failed)
            .values(status="deleted", ended_from="failed")
        )  # fmt: skip
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/oversight")
    admin.get_by_label("State").select_option("failed")
    admin.get_by_role("button", name="Show").click()
    expect(admin.get_by_text("1 found")).to_be_visible()
    row = admin.get_by_role("table", name="Transactions").get_by_role(
        "row", name=re.compile("PAT-1")
    )
    expect(row.locator(".status")).to_have_text("deletedwas failed")
    assert_accessible(admin)
