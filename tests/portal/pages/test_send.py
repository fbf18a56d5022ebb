"""Sending studies from the browser: picked from our archive, or uploaded from a folder (with
files that are not DICOM in it, and a connection that drops), then checked and sent; and what
everyone who may not send gets."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect
from pydicom.fileset import FileSet
from sqlmodel import Session, select

from dimse.context import BridgeContext
from ferry.background import build_worker
from policy import store
from policy.models import Node
from tests.conftest import free_port
from tests.dimse.test_remote import RemotePacs
from tests.factories import StudySpec, ct_slice, write_series
from tests.portal.pages.conftest import PACS_PATIENT, World, assert_accessible, snapshot

UPLOADED = StudySpec(
    patient_id="PAT-UP",
    patient_name="Upload^Ursula",
    modality="CT",
    accession_number="ACC-UP",
    study_description="Abdomen from a CD",
)


def _worklist(world: World) -> list[dict[str, Any]]:
    answer = world.api("hosp-radiologist", "GET", "/worklist?institution=HOSP")
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _cd_folder(root: Path, count: int = 3) -> Path:
    """A CD as a person has it: DICOM files in sub-folders, a DICOMDIR, a text file, an image."""
    folder = root / "CD"
    paths = write_series(folder / "IMAGES", count, spec=UPLOADED)
    directory = FileSet()
    directory.add(ct_slice(spec=UPLOADED))
    directory.write(root / "fileset")
    shutil.copy(root / "fileset" / "DICOMDIR", folder / "DICOMDIR")
    (folder / "README.TXT").write_text("Viewer on this CD: run setup.exe\n")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert len(paths) == count
    return folder


def test_pick_from_our_archive_and_send_to_a_worklist(world: World) -> None:
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN")
    page.get_by_role("link", name="Send studies").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Send studies from Clinic North")
    page.get_by_label("Patient ID").fill("PAT-1")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#found caption")).to_have_text("1 study found")
    page.get_by_role("checkbox", name=re.compile("Doe, Chest")).check()
    page.get_by_label(re.compile("^HOSP")).check()
    page.get_by_role("radio", name="urgent").check()
    page.get_by_label(re.compile("Note to the receiver")).fill("Query PE, call 1234")
    assert_accessible(page)
    snapshot(page, "send-studies")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page).to_have_url(re.compile(r"/transfers/[A-Za-z0-9_-]{8,32}\?done=sent$"))
    expect(page.get_by_role("status")).to_have_text("The transfer was sent.")
    expect(page.locator("#transfer-facts")).to_contain_text("urgent")
    [item] = _worklist(world)
    assert item["priority"] == "urgent" and item["note"] == "Query PE, call 1234"
    assert [s["patient_id"] for s in item["studies"]] == ["PAT-1"]


def test_upload_a_cd_folder_skipping_what_is_not_dicom_then_send(
    world: World, tmp_path: Path
) -> None:
    folder = _cd_folder(tmp_path)
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    page.get_by_label("A folder").set_input_files(folder)
    page.get_by_label(re.compile("^HOSP")).check()
    page.get_by_role("button", name="Send", exact=True).click()
    summary = page.get_by_role("region", name="3. Check and send")
    expect(summary).to_contain_text("The upload holds 1 study of 1 patient.")
    expect(summary).to_contain_text("Upload, Ursula")
    expect(summary).to_contain_text("PAT-UP")
    expect(page.locator("#upload-status")).to_have_text(
        "Sent 3 of 3 files to Ferry (3 stored, 0 refused, 3 not DICOM and skipped)."
    )
    assert _worklist(world) == []  # a draft: nothing has gone yet
    expect(page.get_by_role("button", name="Resume the upload")).to_be_hidden()  # nothing to resume
    assert_accessible(page)
    snapshot(page, "send-upload")
    summary.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_have_text("The transfer was sent.")
    [item] = _worklist(world)
    assert [s["accession_number"] for s in item["studies"]] == ["ACC-UP"]
    uid = item["studies"][0]["study_uid"]
    headers = {"authorization": f"Bearer {world.tokens['hosp-radiologist']}"}
    found = httpx.get(f"{world.base}/dicom-web/studies/{uid}/instances", headers=headers)
    assert found.status_code == 200 and len(found.json()) == 3


def test_an_upload_resumes_after_the_connection_drops(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    paths = write_series(folder, 3, spec=UPLOADED)
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    dropped: list[str] = []

    def drop_the_first(route: Any) -> None:
        if not dropped:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/dicom-web/studies?transfer=*", drop_the_first)
    page.get_by_label("Files").set_input_files([str(p) for p in paths])
    page.get_by_label(re.compile("^HOSP")).check()
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("region", name="3. Check and send")).to_contain_text("PAT-UP")
    assert len(dropped) == 1
    expect(page.locator("#upload-status")).to_contain_text("3 stored, 0 refused")
    expect(page.get_by_role("button", name="Resume the upload")).to_be_hidden()


def test_a_refused_file_is_named_and_the_rest_are_stored(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    good = write_series(folder, 2, spec=UPLOADED)
    [other] = write_series(tmp_path / "other", 1, spec=UPLOADED)
    cut = folder / "cut-short.dcm"
    whole = other.read_bytes()
    cut.write_bytes(whole[: len(whole) * 6 // 10])  # cut inside an element: refused, 0xC000
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    page.get_by_label("Files").set_input_files([str(p) for p in [*good, cut]])
    page.get_by_label(re.compile("^HOSP")).check()
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("region", name="3. Check and send")).to_contain_text("PAT-UP")
    expect(page.locator("#upload-errors")).to_contain_text("cut-short.dcm")
    expect(page.locator("#upload-status")).to_contain_text("1 refused")


def test_a_draft_can_be_discarded(world: World, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "files", 1, spec=UPLOADED)
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    page.get_by_label("Files").set_input_files([str(p) for p in paths])
    page.get_by_label(re.compile("^HOSP")).check()
    page.get_by_role("button", name="Send", exact=True).click()
    page.get_by_role("button", name="Discard").click()
    expect(page.get_by_role("status")).to_have_text("The draft was discarded.")
    assert _worklist(world) == []


def test_only_destinations_allowed_now_are_offered(world: World) -> None:
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    options = page.locator("input[name=destination]")
    expect(options).to_have_count(1)
    expect(options).to_have_value("HOSP")
    page.get_by_text(re.compile(r"Not allowed now \(\d+\)")).click()
    expect(page.locator(".left-out")).to_contain_text("FAR")


def test_who_may_not_send_is_refused(world: World) -> None:
    requester = world.page("hosp-requester")
    requester.goto("/institutions/HOSP")
    expect(requester.get_by_role("link", name="Send studies")).to_have_count(0)
    answer = requester.goto("/institutions/HOSP/send")
    assert answer is not None and answer.status == 403
    other = world.page("far-radiologist")
    answer = other.goto("/institutions/CLIN/send")
    assert answer is not None and answer.status == 404  # CLIN is not theirs: as if missing


def test_another_institutions_draft_answers_like_a_missing_one(
    world: World, tmp_path: Path
) -> None:
    made = world.api(
        "clin-sender", "POST", "/transfers", {"institution": "CLIN", "destination": "HOSP"}
    )
    assert made.status_code == 201, made.text
    draft = made.json()["id"]
    for who, code in (("far-radiologist", "FAR"), ("hosp-radiologist", "HOSP")):
        page = world.page(who)
        answer = page.goto(f"/institutions/{code}/send/drafts/{draft}")
        assert answer is not None and answer.status == 404, who
        missing = page.goto(f"/institutions/{code}/send/drafts/AAAAAAAAAAAAAAAAAAAAAA")
        assert missing is not None and missing.status == 404


def _post(world: World, who: str, path: str, data: dict[str, Any], csrf: bool = True) -> Any:
    page = world.page(who)
    page.goto("/institutions/CLIN/send" if who.startswith("clin") else "/")
    token = page.evaluate(
        "() => JSON.parse(document.body.getAttribute('hx-headers') || '{}')['X-CSRF-Token'] || ''"
    )
    fields = {**data, **({"csrf_token": token} if csrf else {})}
    return page.request.post(path, form=fields, max_redirects=0)


def test_bad_sends_get_a_reason_and_nothing_is_sent(world: World) -> None:
    path = "/institutions/CLIN/send"
    no_csrf = _post(world, "clin-sender", path, {"destination": "HOSP", "study": "1.2.3"}, False)
    assert no_csrf.status == 403
    no_study = _post(world, "clin-sender", path, {"destination": "HOSP"})
    assert no_study.status == 400 and "choose at least one study" in no_study.text()
    unknown = _post(world, "clin-sender", path, {"destination": "HOSP", "study": "1.2.3.999"})
    assert unknown.status == 400
    not_allowed = _post(
        world,
        "clin-sender",
        path,
        {"destination": "FAR", "study": world.studies["chest"].study_uid},
    )
    assert not_allowed.status == 403
    huge_note = _post(
        world,
        "clin-sender",
        path,
        {"destination": "HOSP", "study": world.studies["chest"].study_uid, "note": "x" * 5000},
    )
    assert huge_note.status in (400, 413)
    search = "/institutions/CLIN/send/search"
    wildcard = _post(world, "clin-sender", search, {"patient_name": "Doe*"})
    assert wildcard.status == 400
    not_ours = _post(world, "clin-sender", search, {"source": "HOSP_PACS", "patient_id": "P"})
    assert not_ours.status == 400  # HOSP's node is not one CLIN may search
    page = world.page("clin-sender")
    assert _worklist(world) == []
    assert page.goto("/institutions/CLIN/send") is not None  # and the page still answers
    expect(page.get_by_role("heading", level=1)).to_have_text("Send studies from Clinic North")


def test_pick_studies_on_our_pacs_node_and_ferry_fetches_then_sends(
    world: World, pacs: RemotePacs
) -> None:
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    page.get_by_label("Search in").select_option(label="Our node CLIN_PACS")
    page.get_by_label("Patient ID").fill(PACS_PATIENT)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#found caption")).to_contain_text("2 studies found on CLIN_PACS")
    assert PACS_PATIENT not in page.url  # the search was posted: no patient data in the URL
    page.get_by_role("checkbox", name=re.compile("Pacs, Paula")).first.check()
    page.get_by_label(re.compile("^HOSP")).check()
    assert_accessible(page)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Ferry is fetching the studies")
    assert _worklist(world) == []  # not sent before the study is in
    worker = build_worker(
        BridgeContext(world.server.settings.dimse(), world.server.archive), world.server.settings
    )
    assert worker.run_until_idle() >= 1
    [item] = _worklist(world)
    assert [s["patient_id"] for s in item["studies"]] == [PACS_PATIENT]
    assert all(s["in_archive"] for s in item["studies"])


def test_a_pacs_that_does_not_answer_is_named_and_the_page_still_answers(
    world: World, pacs: RemotePacs
) -> None:
    engine = world.server.archive.engine
    with Session(engine) as session:
        node = session.exec(select(Node).where(Node.ae_title == "CLIN_PACS")).one()
    store.update_node(engine, replace(store.node_facts(node), port=free_port()))  # nobody there
    page = world.page("clin-sender")
    page.goto("/institutions/CLIN/send")
    page.get_by_label("Search in").select_option(label="Our node CLIN_PACS")
    page.get_by_label("Patient ID").fill(PACS_PATIENT)
    with page.expect_response(re.compile("/send/search$")) as searched:
        page.get_by_role("button", name="Search").click()
    assert searched.value.status == 502
    expect(page.get_by_role("heading", level=1)).to_have_text("Trouble with the node")
    expect(page.get_by_role("alert")).to_contain_text("CLIN_PACS at 127.0.0.1:")
    assert_accessible(page)
    page.goto("/institutions/CLIN/send")
    expect(page.get_by_role("heading", level=1)).to_have_text("Send studies from Clinic North")
