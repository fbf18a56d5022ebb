"""Pseudonymisation profiles in the browser: an administrator adds one and removes one; a
sender sends pseudonymised copies with it from the send page, and the receiver sees only the
copy; nobody else may change the profiles, and bad forms change nothing."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from dimse.context import BridgeContext
from ferry.background import build_worker
from tests.portal.pages._people import add_person, csrf
from tests.portal.pages.conftest import World, assert_accessible, snapshot

PROFILES = "/institutions/HOSP/admin/profiles"


def _profiles(world: World, code: str = "HOSP", who: str = "hosp-admin") -> dict[str, Any]:
    answer = world.api(who, "GET", f"/institutions/{code}/pseudonymisation-profiles")
    assert answer.status_code == 200, answer.text
    return {p["name"]: p for p in answer.json()}


def test_an_administrator_adds_and_removes_a_profile(world: World) -> None:
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin")
    page.get_by_role("link", name="Pseudonymisation profiles").click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP/admin/profiles$"))
    table = page.get_by_role("table", name="Profiles of Harbour Hospital")
    expect(table).to_contain_text("No profile")
    assert_accessible(page)

    page.get_by_label("Name", exact=True).fill("teaching")
    page.get_by_label("What it is for").fill("teaching file of the radiology school")
    page.get_by_label(re.compile("^Keep as they are")).fill(
        "PatientSex, PatientAge\nStudyDescription"
    )
    page.get_by_label("Remove as well").fill("SeriesDescription")
    page.get_by_label(re.compile("^Set to a value")).fill("InstitutionName = TEACHING FILE")
    page.get_by_label("Dates").select_option("shift")
    page.get_by_role("button", name="Add the profile").click()
    expect(page.get_by_role("status")).to_have_text("The profile was added.")
    row = table.get_by_role("row", name=re.compile("teaching"))
    for words in ("PatientAge, PatientSex, StudyDescription", "SeriesDescription",
                  "InstitutionName = TEACHING FILE", "shifted per patient", "removed"):  # fmt: skip
        expect(row).to_contain_text(words)
    assert_accessible(page)
    snapshot(page, "admin-profiles")
    stored = _profiles(world)["teaching"]
    assert stored["keep"] == ["PatientAge", "PatientSex", "StudyDescription"]
    assert stored["dates"] == "shift"

    page.get_by_text("Remove teaching…").click()
    expect(page.get_by_text("Copies made with teaching stay.")).to_be_visible()
    page.get_by_role("button", name="Remove profile teaching").click()
    expect(page.get_by_role("status")).to_have_text("The profile was removed.")
    expect(table).to_contain_text("No profile")
    assert _profiles(world) == {}


def test_bad_profile_forms_say_why_and_change_nothing(world: World) -> None:
    page = world.page("hosp-admin")
    page.goto(PROFILES)
    token = csrf(page)
    cases = [
        ({"name": "p", "keep": "PatientShoeSize"}, 400, "not a DICOM keyword"),
        ({"name": "p", "keep": "PatientID"}, 400, "always pseudonymised"),
        ({"name": "p", "replace": "InstitutionName"}, 400, "Keyword = value"),
        ({"name": "p", "dates": "whenever"}, 400, ""),
        ({"name": ""}, 400, ""),
    ]
    for fields, status, words in cases:
        answer = page.request.post(PROFILES, form={"csrf_token": token, **fields},
                                   max_redirects=0)  # fmt: skip
        assert answer.status == status, (fields, answer.status)
        assert words in answer.text()
    assert _profiles(world) == {}
    made = page.request.post(PROFILES, form={"csrf_token": token, "name": "twice"},
                             max_redirects=0)  # fmt: skip
    assert made.status == 303
    twice = page.request.post(PROFILES, form={"csrf_token": token, "name": "twice"},
                              max_redirects=0)  # fmt: skip
    assert twice.status == 409 and "already a profile" in twice.text()
    assert set(_profiles(world)) == {"twice"}


def test_profiles_are_refused_to_who_may_not_administer_them(world: World) -> None:
    assert world.api("hosp-admin", "POST", "/institutions/HOSP/pseudonymisation-profiles",
                     {"name": "research"}).status_code == 201  # fmt: skip
    admin = world.page("hosp-admin")
    admin.goto(PROFILES)
    answer = admin.request.post(f"{PROFILES}/research/remove", form={}, max_redirects=0)
    assert answer.status == 403  # no CSRF token
    answer = admin.goto("/institutions/CLIN/admin/profiles")
    assert answer is not None and answer.status == 404  # not their institution
    for who in ("hosp-radiologist", "hosp-requester"):  # a sender, a request-only person
        page = world.page(who)
        answer = page.goto(PROFILES)
        assert answer is not None and answer.status == 403, who
        page.goto("/institutions/HOSP")
        theirs = csrf(page)
        for target, fields in ((PROFILES, {"name": "sneaky"}), (f"{PROFILES}/research/remove", {})):
            answer = page.request.post(target, form={"csrf_token": theirs, **fields},
                                       max_redirects=0)  # fmt: skip
            assert answer.status == 403, (who, target)
    other = world.page("far-radiologist")
    answer = other.goto(PROFILES)
    assert answer is not None and answer.status == 404
    assert set(_profiles(world)) == {"research"}


def test_a_sender_sends_pseudonymised_copies_and_the_receiver_sees_only_the_copy(
    world: World,
) -> None:
    add_person(world, "clin-admin", {"CLIN": "admin"})
    made = world.api("clin-admin", "POST", "/institutions/CLIN/pseudonymisation-profiles",
                     {"name": "research", "description": "chest cohort",
                      "keep": ["PatientSex"]})  # fmt: skip
    assert made.status_code == 201, made.text
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    page.get_by_label("Patient ID").fill("PAT-1")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("checkbox", name=re.compile("Doe, Chest")).check()
    page.get_by_label(re.compile("^HOSP")).check()
    page.get_by_label(re.compile("^What the destination gets")).select_option(
        label="pseudonymised copies, profile research: chest cohort"
    )
    assert_accessible(page)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page).to_have_url(re.compile(r"/transfers/[A-Za-z0-9_-]{8,32}\?done=copying$"))
    expect(page.get_by_role("status")).to_have_text(
        "Ferry is making the pseudonymised copies; it sends them when they are in."
    )
    expect(page.locator("#transfer-facts")).to_contain_text(
        "pseudonymised copies, profile research"
    )
    transfer = page.url.split("/transfers/")[1].split("?")[0]

    server = world.server
    build_worker(BridgeContext(server.settings.dimse(), server.archive),
                 server.settings).run_until_idle()  # fmt: skip
    receiver = world.page("hosp-radiologist")
    receiver.goto(f"/transfers/{transfer}")
    expect(receiver.locator("#transfer-facts")).to_contain_text("on the worklist")
    expect(receiver.locator("#transfer-facts")).to_contain_text(
        "pseudonymised copies, profile research"
    )
    body = receiver.locator("main")
    expect(body).to_contain_text("PSN")
    for identifying in ("PAT-1", "Doe", "ACC-PAT-1"):
        expect(body).not_to_contain_text(identifying)
    assert_accessible(receiver)
    refused = world.page("clin-sender")
    refused.goto("/institutions/CLIN/send")
    token = csrf(refused)
    answer = refused.request.post(
        "/institutions/CLIN/send",
        form={"csrf_token": token, "study": world.studies["chest"].study_uid,
              "destination": "HOSP", "profile": "nobody-s"},
        max_redirects=0,
    )  # fmt: skip
    assert answer.status == 400 and "no pseudonymisation profile" in answer.text()


def test_an_administrator_takes_only_pseudonymised_copies_from_a_sender(world: World) -> None:
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/rules")
    admin.get_by_label("From", exact=True).select_option("FAR")
    admin.get_by_label("pseudonymised copies only").check()
    admin.get_by_role("button", name="Add the rule").click()
    expect(admin.get_by_role("status")).to_have_text("The rule was added.")
    row = admin.get_by_role("table", name="Destination rules").get_by_role(
        "row", name=re.compile("FAR")
    )
    expect(row).to_contain_text("pseudonymised copies only")
    assert_accessible(admin)
    rules = world.api("hosp-admin", "GET", "/institutions/HOSP/destination-rules").json()
    assert [r["pseudonymised_only"] for r in rules if r["sender_institution_pk"]
            == world.pks["FAR"]] == [True]  # fmt: skip
    sender = world.page("far-radiologist")
    sender.goto("/institutions/FAR/send")
    expect(sender.get_by_text("(pseudonymised copies only)")).to_be_visible()


def test_an_administrator_tries_a_profile_on_a_study_before_sending(world: World) -> None:
    add_person(world, "clin-admin", {"CLIN": "admin"})
    made = world.api("clin-admin", "POST", "/institutions/CLIN/pseudonymisation-profiles",
                     {"name": "teaching", "keep": ["StudyDescription"]})  # fmt: skip
    assert made.status_code == 201, made.text
    page = world.page("clin-admin")
    page.goto("/institutions/CLIN/admin/profiles")
    page.get_by_text("Try teaching on a study…").click()
    page.get_by_label("Study Instance UID of one of our studies").fill(
        world.studies["chest"].study_uid
    )
    page.get_by_role("button", name="Show what teaching makes of it").click()
    table = page.get_by_role("table", name="The copy against the study")
    expect(table).to_be_visible()
    patient = table.get_by_role("row", name=re.compile("^PatientID"))
    expect(patient).to_contain_text("PAT-1")  # the administrator reads the original here
    expect(patient).to_contain_text("PSN")
    expect(table.get_by_role("row", name=re.compile("^StudyDescription"))).to_contain_text("kept")
    expect(table.get_by_role("row", name=re.compile("^AccessionNumber"))).to_contain_text("emptied")
    assert_accessible(page)
    snapshot(page, "admin-profile-preview")
    token = csrf(page)
    for study, words in (("1.2.3.4.5", "that you may see"),
                         ("not a uid", "")):  # fmt: skip
        answer = page.request.post(
            "/institutions/CLIN/admin/profiles/teaching/preview",
            form={"csrf_token": token, "study": study}, max_redirects=0,
        )  # fmt: skip
        assert answer.status == 400, study
        assert words in answer.text()
    sender = world.page("clin-sender")  # a sender, not an administrator
    sender.goto("/institutions/CLIN")
    answer = sender.request.post(
        "/institutions/CLIN/admin/profiles/teaching/preview",
        form={"csrf_token": csrf(sender), "study": world.studies["chest"].study_uid},
        max_redirects=0,
    )  # fmt: skip
    assert answer.status == 403
