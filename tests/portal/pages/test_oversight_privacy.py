"""No patient identifier in a URL: the oversight searches by patient ID or accession number
are posted (with the session's CSRF token), page on by posted forms and download their CSV by
one; whoever may not oversee is refused at each of those doors as at the pages themselves."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from playwright.sync_api import expect

from policy import store
from tests.policy._people import change_user
from tests.portal.pages.conftest import World, assert_accessible, password_hash
from tests.portal.pages.test_oversight_pages import download_csv

BASE = "/institutions/HOSP/oversight"
PATIENT_DOORS = (f"{BASE}/transactions", f"{BASE}/transactions/csv", f"{BASE}/audit",
                 f"{BASE}/audit/csv")  # fmt: skip


def _person(world: World, who: str, code: str, roles: list[str]) -> Any:
    engine = world.server.archive.engine
    user = store.create_user(engine, world.email(who), name=who.replace("-", " ").title())
    change_user(engine, user.pk or 0, password_hash=password_hash())
    store.set_membership(engine, user.pk or 0, world.pks[code], roles)
    return world.page(who)


def _csrf(page: Any) -> str:
    page.goto("/account/notifications")  # any signed-in page: the sign-out form holds the token
    return str(page.locator("input[name=csrf_token]").first.input_value())


def test_a_search_by_patient_pages_on_without_the_id_in_any_url(world: World) -> None:
    for _ in range(26):  # one more than a page
        world.send("chest")
    world.send("head")
    admin = world.page("hosp-admin")
    seen: list[str] = []
    admin.on("request", lambda request: seen.append(request.url))
    admin.goto(f"{BASE}/transactions")
    admin.get_by_label("Patient ID").fill("PAT-1")
    admin.get_by_role("button", name="Show").click()
    expect(admin.get_by_text("26 found, showing 1 to 25")).to_be_visible()
    rows = admin.get_by_role("table", name="Transactions").locator("tbody tr")
    expect(rows).to_have_count(25)
    expect(rows.filter(has_text="PAT-2")).to_have_count(0)
    assert_accessible(admin)
    admin.get_by_role("button", name="Next page").click()
    expect(admin.get_by_text("26 found, showing 26 to 26")).to_be_visible()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("PAT-1")
    expect(admin.get_by_label("Patient ID")).to_have_value("PAT-1")
    admin.get_by_role("button", name="Previous page").click()
    expect(rows).to_have_count(25)
    assert len(download_csv(admin)) == 26
    admin.get_by_role("link", name="Audit trail").click()
    admin.get_by_label("Accession number").fill("ACC-PAT-1")
    admin.get_by_role("button", name="Search").click()
    events = admin.get_by_role("table", name="Audit events").locator("tbody tr")
    expect(events).to_have_count(50)
    admin.get_by_role("button", name="Older events").click()
    expect(events.first).to_contain_text("ACC-PAT-1")
    expect(events.filter(has_text="ACC-PAT-2")).to_have_count(0)
    expect(admin.get_by_role("button", name="Newest events")).to_be_visible()
    assert_accessible(admin)
    trail = download_csv(admin)
    assert {r["accession_number"] for r in trail} == {"ACC-PAT-1"}
    assert len(trail) > 50
    assert seen and not [url for url in seen if "PAT-1" in url]  # nor history, nor a log


def test_a_search_without_patient_data_keeps_its_filters_in_the_url(world: World) -> None:
    world.send("chest")
    admin = world.page("hosp-admin")
    admin.goto(f"{BASE}/transactions?patient_id=PAT-2")  # a patient in a URL: not read
    expect(admin.get_by_label("Patient ID")).to_have_value("")
    expect(admin.get_by_text("1 found")).to_be_visible()
    admin.get_by_label("Direction").select_option("received")
    admin.get_by_role("button", name="Show").click()
    expect(admin).to_have_url(re.compile(r"/oversight/transactions\?direction=received&"))
    expect(admin.get_by_text("1 found")).to_be_visible()
    admin.get_by_role("link", name="Audit trail").click()
    admin.get_by_label("User").fill("user:clin-sender@ferry.test")
    admin.get_by_role("button", name="Search").click()
    expect(admin).to_have_url(re.compile(r"/oversight/audit\?user=user%3Aclin-sender"))
    answer = admin.request.post(
        f"{BASE}/transactions",
        form={"csrf_token": _csrf(admin), "patient_id": "x" * 65},
    )
    assert answer.status == 400 and "patient id" in answer.text()


def test_who_may_not_oversee_cannot_search_or_download_by_patient(world: World) -> None:
    world.send("chest")
    refused = {
        "hosp-radiologist": 403,  # a member without the right: told why
        "hosp-requester": 403,  # a request-only user
        "hosp-viewer": 403,
    }
    for who, status in refused.items():
        page = world.page(who)
        form = {"csrf_token": _csrf(page), "patient_id": "PAT-1"}
        for path in PATIENT_DOORS:
            answer = page.request.post(path, form=form)
            assert answer.status == status, (who, path)
            assert "PAT-1" not in answer.text()
    other = _person(world, "far-admin", "FAR", ["admin"])  # another institution's administrator
    form = {"csrf_token": _csrf(other), "patient_id": "PAT-1"}
    for path in PATIENT_DOORS:
        answer = other.request.post(path, form=form)
        assert answer.status == 404, path
        assert "PAT-1" not in answer.text()
    admin = world.page("hosp-admin")  # beyond their institutions, and without the token
    form = {"csrf_token": _csrf(admin), "patient_id": "PAT-1"}
    for path in PATIENT_DOORS:
        answer = admin.request.post(path.replace("HOSP", "CLIN"), form=form)
        assert answer.status == 404, path
        answer = admin.request.post(path, form={"patient_id": "PAT-1"})
        assert answer.status == 403, path
        assert "PAT-1" not in answer.text()
    answer = admin.request.post(f"{BASE}/transactions/csv", form=form)
    assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(answer.text())))
    assert [r["patient_id"] for r in rows] == ["PAT-1"]


def test_the_patients_story_is_found_after_retention_deleted_the_study(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    from retention.config import RetentionConfig
    from retention.sweeper import Sweeper

    world.send("chest")
    later = datetime.now(UTC) + timedelta(days=400)
    report = Sweeper(world.server.archive, RetentionConfig(pause_seconds=0), lambda: later).run()
    assert world.studies["chest"].study_uid in report.studies_deleted
    auditor = world.page("hosp-admin")
    auditor.goto(f"{BASE}/transactions")
    auditor.get_by_label("Accession number").fill("ACC-PAT-1")
    auditor.get_by_role("button", name="Show").click()
    expect(auditor.get_by_text("1 found")).to_be_visible()
    row = auditor.get_by_role("table", name="Transactions").locator("tbody tr")
    expect(row).to_contain_text("PAT-1")
    expect(row).to_contain_text("ACC-PAT-1")
    assert "ACC-PAT-1" not in auditor.url
