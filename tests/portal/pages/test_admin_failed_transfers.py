"""Failed transfers on the administration's jobs page, in Chromium: a delivery to a node that
is down fails; the sender's administrator retries it once the node is up and the studies
arrive; or marks it delivered with a reason ("deliver as sent"); the receiver's administrator
retries the parked job of it. Each sees only the buttons they may use; the rest are refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from dimse.context import BridgeContext
from exchange.models import Transfer
from ferry.background import build_worker
from ferry.settings import Settings
from foundation.jobs import JobQueue, Worker
from policy import store
from tests import factories
from tests._peers import storescp
from tests.conftest import free_port, make_settings
from tests.portal.pages._people import add_person, csrf
from tests.portal.pages.conftest import World, assert_accessible, snapshot


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """One attempt per delivery: a node that is down parks the job at once."""
    return make_settings(tmp_path, database_url, forward_max_attempts=1)


class Down:
    """HOSP's node HOSP_DOWN, which nothing answers until `up()`; the job worker."""

    def __init__(self, world: World, tmp_path: Path) -> None:
        self.world = world
        self.port = free_port()
        self.folder = tmp_path / "received"
        engine = world.server.archive.engine
        node = factories.create_node(
            engine, world.pks["HOSP"], "HOSP_DOWN", "127.0.0.1", self.port, can_write=True
        )
        store.create_destination_rule(
            engine, world.pks["HOSP"], node_pk=node.pk, sender_institution_pk=world.pks["CLIN"]
        )
        server = world.server
        self.worker: Worker = build_worker(
            BridgeContext(server.settings.dimse(), server.archive), server.settings
        )

    def failed_transfer(self) -> tuple[str, Transfer]:
        """CLIN's sender sends the chest study to HOSP_DOWN; the delivery fails."""
        body = {"institution": "CLIN", "destination": "HOSP", "node": "HOSP_DOWN", "send": True,
                "studies": [self.world.studies["chest"].study_uid]}  # fmt: skip
        made = self.world.api("clin-sender", "POST", "/transfers", body)
        assert made.status_code == 201, made.text
        self.worker.run_until_idle()
        tid = str(made.json()["id"])
        row = self.row(tid)
        assert row.status == "failed"
        return tid, row

    def row(self, tid: str) -> Transfer:
        with Session(self.world.server.archive.engine) as session:
            found = session.exec(select(Transfer).where(Transfer.public_id == tid)).one()
            session.expunge(found)
            return found

    def up(self) -> Any:
        return storescp(self.folder, self.port, ae_title="HOSP_DOWN")


@pytest.fixture
def down(world: World, tmp_path: Path) -> Iterator[Down]:
    add_person(world, "clin-admin", {"CLIN": "admin,sender"})  # administers and sends
    add_person(world, "clin-admin-only", {"CLIN": "admin"})
    add_person(world, "far-admin", {"FAR": "admin"})
    yield Down(world, tmp_path)


def test_the_senders_administrator_retries_a_failed_delivery_once_the_node_is_up(
    world: World, down: Down
) -> None:
    tid, row = down.failed_transfer()
    page = world.page("clin-admin")
    page.goto("/institutions/CLIN/admin")
    page.get_by_role("link", name="Failed jobs and transfers").click()
    failed = page.get_by_role("table", name="Failed transfers")
    line = failed.get_by_role("row", name=re.compile(f"#{row.pk}"))
    expect(line).to_contain_text("failed")
    expect(line).to_contain_text("HOSP_DOWN")  # why: the node did not answer
    expect(line.get_by_role("button", name=f"Retry transfer #{row.pk}")).to_be_visible()
    expect(line.get_by_text(f"Mark #{row.pk} as delivered…")).to_be_visible()
    parked = page.get_by_role("table", name="Parked jobs")
    expect(parked.get_by_role("row", name=re.compile(f"#{row.job_pk}"))).to_contain_text(
        "forward-study"
    )
    expect(page.get_by_text("The parked jobs of Clinic North's transfers")).to_be_visible()
    assert_accessible(page)
    snapshot(page, "admin-failed-transfers")
    with down.up() as received:
        line.get_by_role("button", name=f"Retry transfer #{row.pk}").click()
        expect(page.get_by_role("status")).to_have_text("The transfer was sent again.")
        expect(failed).to_contain_text("No failed transfer.")
        down.worker.run_until_idle()
        assert down.row(tid).status == "delivered"
        assert len(list(received.iterdir())) == 2  # the chest study's two images
    assert_accessible(page)


def test_the_senders_administrator_marks_a_failed_delivery_delivered(
    world: World, down: Down
) -> None:
    tid, row = down.failed_transfer()
    page = world.page("clin-admin-only")
    page.goto("/institutions/CLIN/admin/jobs")
    line = page.get_by_role("table", name="Failed transfers").get_by_role(
        "row", name=re.compile(f"#{row.pk}")
    )
    expect(line.get_by_role("button", name=re.compile("Retry transfer"))).to_have_count(0)
    line.get_by_text(f"Mark #{row.pk} as delivered…").click()
    expect(line.get_by_text("Ferry sends nothing more")).to_be_visible()
    assert_accessible(page)
    blank = page.request.post(
        f"/institutions/CLIN/admin/transfers/{tid}/mark-delivered",
        form={"csrf_token": csrf(page), "reason": "  "},
        max_redirects=0,
    )
    assert blank.status == 400 and "how you know" in blank.text()
    assert down.row(tid).status == "failed"
    why = "Harbour's PACS team confirmed both images are stored"
    line.get_by_label("How do you know the studies arrived?").fill(why)
    line.get_by_role("button", name=f"Mark transfer #{row.pk} as delivered").click()
    expect(page.get_by_role("status")).to_have_text(
        "The transfer was marked delivered; its history keeps why."
    )
    expect(page.get_by_role("table", name="Failed transfers")).to_contain_text(
        "No failed transfer."
    )
    assert_accessible(page)
    shown = world.page("clin-sender")
    shown.goto(f"/transfers/{tid}")
    change = shown.get_by_role("row", name=re.compile("delivered by other means"))
    expect(change).to_contain_text(why)  # the history keeps who and why
    expect(change).to_contain_text("clin-admin-only@ferry.test")
    assert_accessible(shown)


def test_the_receivers_administrator_retries_the_parked_job(world: World, down: Down) -> None:
    tid, row = down.failed_transfer()
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin/jobs")
    line = page.get_by_role("table", name="Failed transfers").get_by_role(
        "row", name=re.compile(f"#{row.pk}")
    )
    expect(line).to_contain_text("failed")
    expect(line.get_by_role("button")).to_have_count(0)  # the sender's to resend or mark
    expect(line.get_by_text(re.compile("as delivered"))).to_have_count(0)
    assert_accessible(page)
    with down.up() as received:
        page.get_by_role("button", name=f"Retry job #{row.job_pk}").click()
        expect(page.get_by_role("status")).to_have_text("The job was sent round again.")
        down.worker.run_until_idle()
        assert down.row(tid).status == "delivered"
        assert len(list(received.iterdir())) == 2
    page.goto("/institutions/HOSP/admin/jobs")
    expect(page.get_by_role("table", name="Parked jobs")).to_contain_text("No parked job.")
    assert_accessible(page)


def test_failed_transfers_and_their_jobs_are_refused_to_everyone_else(
    world: World, down: Down
) -> None:
    tid, row = down.failed_transfer()
    both = {"resend": 403, "mark-delivered": 403}
    cases: list[tuple[str, str, dict[str, int], int | None]] = [
        # who, their page, what each transfer action answers, what retrying the job answers
        ("far-admin", "FAR", {"resend": 404, "mark-delivered": 404}, 404),  # another's admin
        ("clin-sender", "CLIN", {"mark-delivered": 403}, 404),  # a plain sender (may resend)
        ("clin-requester", "CLIN", both, 404),  # request-only
        ("hosp-radiologist", "HOSP", both, 404),  # the receiving institution's member
        ("hosp-admin", "HOSP", both, None),  # the receiver's administrator: its job is theirs
    ]
    for who, code, answers, job_answer in cases:
        page = world.page(who)
        page.goto(f"/institutions/{code}")
        token = csrf(page)
        for action, status in answers.items():
            answer = page.request.post(
                f"/institutions/{code}/admin/transfers/{tid}/{action}",
                form={"csrf_token": token, "reason": "it is there"},
                max_redirects=0,
            )
            assert answer.status == status, (who, action, answer.status)
        if job_answer is not None:
            answer = page.request.post(
                f"/institutions/{code}/admin/jobs/{row.job_pk}/retry",
                form={"csrf_token": token},
                max_redirects=0,
            )
            assert answer.status == job_answer, (who, answer.status)
    far = world.page("far-admin")
    far.goto("/institutions/FAR/admin/jobs")
    expect(far.get_by_role("table", name="Failed transfers")).to_contain_text("No failed transfer.")
    expect(far.get_by_role("table", name="Parked jobs")).to_contain_text("No parked job.")
    assert_accessible(far)
    answer = far.goto("/institutions/CLIN/admin/jobs")
    assert answer is not None and answer.status == 404
    assert down.row(tid).status == "failed"
    job = JobQueue(world.server.archive.engine).get(row.job_pk or 0)
    assert job is not None and job.status == "parked"
