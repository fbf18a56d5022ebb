"""A transfer's page: received, viewed, downloaded, delivered, marked done or returned; and
what everyone else gets (another institution: 404; request-only: no buttons, refused)."""

from __future__ import annotations

import re
import zipfile

import httpx
from playwright.sync_api import expect
from sqlmodel import Session, select

from exchange.models import Transfer
from policy import store
from tests.portal.pages.conftest import World, assert_accessible, snapshot


def _open_from_the_worklist(world: World, who: str = "hosp-radiologist") -> object:
    page = world.page(who)
    page.goto("/institutions/HOSP")
    page.get_by_role("link", name="Doe, Chest").click()
    expect(page).to_have_url(re.compile(r"/transfers/[A-Za-z0-9_-]{8,32}$"))
    return page


def test_receive_view_download_and_mark_done(world: World) -> None:
    world.send("chest", note="please compare")
    page = _open_from_the_worklist(world)
    banner = page.get_by_role("region", name="Patient")
    expect(banner).to_contain_text("Doe, Chest")
    expect(banner).to_contain_text("PAT-1")
    expect(banner).to_contain_text("CLIN")
    expect(page.get_by_role("heading", level=1)).to_have_text("Chest study")
    thumbnail = page.get_by_role("img", name=re.compile("First image of series"))
    expect(thumbnail).to_have_count(1)
    thumbnail.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('.series img').naturalWidth > 0")
    expect(page.locator(".report-text")).to_have_text("chest: no acute finding.")
    expect(page.get_by_text("please compare")).to_be_visible()
    assert_accessible(page)
    snapshot(page, "transfer-page")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as ZIP").click()
    names = zipfile.ZipFile(download.value.path()).namelist()
    assert "DICOMDIR" in names and len(names) == 3
    page.route("**/viewer/viewer?**", lambda route: route.fulfill(body="the viewer"))
    page.get_by_role("button", name="View in the viewer").click()
    expect(page).to_have_url(re.compile(r"/viewer/viewer\?StudyInstanceUIDs=[\d.]+&token="))
    page.go_back()
    page.get_by_label("Download to one of our nodes").select_option("HOSP_PACS")
    page.get_by_role("button", name="Download to node").click()
    expect(page.get_by_role("status")).to_have_text("The download to the node was started.")
    expect(page.locator("#transfer-facts .status")).to_contain_text("delivering")
    page.get_by_role("button", name="Mark done").click()
    expect(page.get_by_role("status")).to_have_text("Marked done.")
    expect(page.get_by_role("button", name="Mark done")).to_have_count(0)
    expect(page.locator("#transfer-facts")).to_contain_text("Done")
    assert_accessible(page)


def test_return_with_a_reason_and_the_sender_sees_why(world: World) -> None:
    transfer = world.send("chest")
    page = _open_from_the_worklist(world)
    page.get_by_text("Return to the sender…").click()
    page.get_by_label("Reason").fill("Wrong patient: not ours")
    assert_accessible(page)
    page.get_by_role("button", name="Return this transfer").click()
    expect(page.get_by_role("status")).to_have_text("The transfer was returned to its sender.")
    expect(page.locator("#transfer-facts .status")).to_contain_text("returned")
    expect(page.get_by_role("button", name="View in the viewer")).to_have_count(0)
    sender = world.page("clin-sender")
    sender.goto(f"/transfers/{transfer}")
    expect(sender.locator("table")).to_contain_text("Wrong patient: not ours")
    expect(sender.get_by_role("button", name="Mark done")).to_have_count(0)
    expect(sender.get_by_text("Return to the sender…")).to_have_count(0)
    assert_accessible(sender)


def test_the_sender_has_no_receivers_buttons(world: World) -> None:
    transfer = world.send("chest")
    page = world.page("clin-sender")
    page.goto(f"/transfers/{transfer}")
    expect(page.get_by_role("region", name="Patient")).to_contain_text("Doe, Chest")
    for name in ("Mark done", "Download to node"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    refused = page.request.post(f"/transfers/{transfer}/done", form={})
    assert refused.status == 403  # no CSRF token


def test_another_institution_finds_nothing_and_changes_nothing(world: World) -> None:
    transfer = world.send("chest")
    page = world.page("far-radiologist")
    for path in (f"/transfers/{transfer}", "/transfers/not-a-transfer-id", "/transfers/x"):
        answer = page.goto(path)
        assert answer is not None and answer.status == 404, path
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    page.goto("/account/notifications")  # any page of theirs, for its CSRF token
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for action, form in (("done", {}), ("return", {"reason": "x"}), ("view", {}),
                         ("deliver", {"node": "HOSP_PACS"})):  # fmt: skip
        answer = page.request.post(
            f"/transfers/{transfer}/{action}", form={**form, "csrf_token": token},
            max_redirects=0,
        )  # fmt: skip
        assert answer.status == 404, action
    state = world.api("hosp-radiologist", "GET", f"/transfers/{transfer}").json()
    assert state["status"] == "on-worklist" and state["done_at"] is None


def test_a_request_only_person_sees_no_transfer_and_may_not_act(world: World) -> None:
    transfer = world.send("chest")
    page = world.page("hosp-requester")
    answer = page.goto(f"/transfers/{transfer}")
    assert answer is not None and answer.status in (403, 404)
    expect(page.get_by_role("button", name="View in the viewer")).to_have_count(0)
    expect(page.get_by_role("link", name="Download as ZIP")).to_have_count(0)
    page.goto("/account/notifications")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for action in ("done", "view", "deliver", "return"):
        form = {"csrf_token": token, "node": "HOSP_PACS", "reason": "no"}
        answer = page.request.post(f"/transfers/{transfer}/{action}", form=form, max_redirects=0)
        assert answer.status in (403, 404), action
    with httpx.Client(base_url=world.base, cookies=dict(_cookies(page))) as http:
        assert http.get(f"/api/transfers/{transfer}/download.zip").status_code in (403, 404)


def _cookies(page: object) -> list[tuple[str, str]]:
    return [(c["name"], c["value"]) for c in page.context.cookies()]  # type: ignore[attr-defined]


def test_an_emails_link_opens_the_transfer_for_its_parties_only(world: World) -> None:
    transfer = world.send("chest")
    with Session(world.server.archive.engine) as session:
        pk = session.exec(select(Transfer.pk).where(Transfer.public_id == transfer)).one()
    page = world.page("hosp-radiologist")
    page.goto(f"/portal/transfers/{pk}")
    expect(page).to_have_url(re.compile(rf"/transfers/{transfer}$"))
    far = world.page("far-radiologist")
    for path in (f"/portal/transfers/{pk}", f"/portal/transfers/{pk + 99}", "/portal/transfers/x"):
        answer = far.goto(path)
        assert answer is not None and answer.status == 404, path
    anonymous = world.anonymous()
    anonymous.goto(f"/portal/transfers/{pk}")
    expect(anonymous).to_have_url(re.compile(rf"/sign-in\?next=/portal/transfers/{pk}$"))


def test_a_viewer_may_look_but_not_download(world: World) -> None:
    transfer = world.send("chest")
    page = world.page("hosp-viewer")
    page.goto(f"/transfers/{transfer}")
    expect(page.get_by_role("button", name="View in the viewer")).to_be_visible()
    expect(page.get_by_role("link", name="Download as ZIP")).to_have_count(0)
    expect(page.get_by_role("button", name="Download to node")).to_have_count(0)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    form = {"csrf_token": token, "node": "HOSP_PACS"}
    refused = page.request.post(f"/transfers/{transfer}/deliver", form=form, max_redirects=0)
    assert refused.status == 403
    zip_refused = page.request.get(f"/api/transfers/{transfer}/download.zip")
    assert zip_refused.status == 403
    assert_accessible(page)


def test_an_administrator_reaches_no_further_than_their_institution(world: World) -> None:
    engine = world.server.archive.engine
    store.create_destination_rule(engine, world.pks["FAR"], sender_institution_pk=world.pks["CLIN"])
    body = {"institution": "CLIN", "destination": "FAR", "send": True,
            "studies": [world.studies["head"].study_uid]}  # fmt: skip
    elsewhere = world.api("clin-sender", "POST", "/transfers", body)
    assert elsewhere.status_code == 201, elsewhere.text
    page = world.page("hosp-admin")
    for path in ("/institutions/CLIN", "/institutions/FAR", f"/transfers/{elsewhere.json()['id']}"):
        answer = page.goto(path)
        assert answer is not None and answer.status == 404, path
