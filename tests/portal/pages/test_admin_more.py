"""More administration pages: API clients and their tokens (a token shown once), failed jobs
and transfers (every job retried by a system administrator, an institution's own by its
administrators), holidays; and everyone who may not
administer the institution is refused, bad forms change nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.sync_api import expect
from sqlmodel import Session

from exchange.models import Transfer
from foundation.jobs import JobQueue
from policy import store
from tests.policy._people import change_user
from tests.portal.pages.conftest import World, assert_accessible, password_hash, snapshot


def _csrf(page: Any) -> str:
    token: str = page.evaluate(
        "() => JSON.parse(document.body.getAttribute('hx-headers') || '{}')['X-CSRF-Token'] || ''"
    )
    return token


def _clients(world: World) -> list[dict[str, Any]]:
    answer = world.api("hosp-admin", "GET", "/institutions/HOSP/api-clients")
    assert answer.status_code == 200, answer.text
    clients: list[dict[str, Any]] = answer.json()
    return clients


def _works(world: World, token: str) -> bool:
    with httpx.Client(base_url=world.base, timeout=30) as http:
        answer = http.get("/api/institutions", headers={"authorization": f"Bearer {token}"})
    return answer.status_code != 401


def _refused_pages(world: World, path: str) -> None:
    """A non-administrator (a radiologist, a request-only person) 403, another institution's
    person 404, an administrator beyond their institutions 404; an API token is no session."""
    for who in ("hosp-radiologist", "hosp-requester"):
        answer = world.page(who).goto(f"/institutions/HOSP{path}")
        assert answer is not None and answer.status == 403, (who, path)
    engine = world.server.archive.engine
    robot = store.create_api_client(engine, f"Reader {path}", world.pks["HOSP"], ["admin"])
    reader = store.issue_api_token(engine, robot.pk or 0, ["read"], None).token
    with httpx.Client(base_url=world.base, timeout=30) as http:
        headers = {"authorization": f"Bearer {reader}"}
        answer = http.get(f"/institutions/HOSP{path}", headers=headers)
    assert answer.status_code == 303 and "/sign-in" in answer.headers["location"], path
    other = world.page("far-radiologist")
    answer = other.goto(f"/institutions/HOSP{path}")
    assert answer is not None and answer.status == 404, path
    admin = world.page("hosp-admin")
    answer = admin.goto(f"/institutions/CLIN{path}")
    assert answer is not None and answer.status == 404, path


# --- API clients and tokens -----------------------------------------------------------------


def test_an_administrator_creates_a_client_issues_and_revokes_its_tokens(world: World) -> None:
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin")
    page.get_by_role("link", name="API clients and tokens").click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP/admin/api-clients$"))
    expect(page.get_by_text("No API client yet.")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Night sync")
    page.get_by_label(re.compile("^receiver")).check()
    page.get_by_label(re.compile("^download")).first.check()
    page.get_by_label("Expires after (days; empty: never)").fill("30")
    assert_accessible(page)
    snapshot(page, "admin-api-clients")
    page.get_by_role("button", name="Create the client").click()
    expect(page.get_by_role("heading", name="A new token for Night sync")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("it will not be shown again")
    first = page.get_by_label("Token").input_value()
    assert first.startswith("ferry_") and _works(world, first)
    assert_accessible(page)
    [client] = _clients(world)
    assert (client["name"], client["roles"]) == ("Night sync", ["receiver"])
    [token] = client["tokens"]
    assert sorted(token["scopes"]) == ["download", "read"] and token["expires_at"]

    page.get_by_role("link", name="Back to the API clients").click()
    card = page.get_by_role("article", name="Night sync")
    expect(card).to_be_visible()
    secret = first.split("_", 2)[2]  # ferry_<token id>_<secret>
    assert secret not in page.content()  # never shown again
    expect(card.get_by_role("table", name="Tokens of Night sync")).to_contain_text("download, read")
    card.get_by_text("Issue another token for Night sync…").click()
    card.get_by_role("button", name="Issue a token for Night sync").click()
    expect(page.get_by_role("alert")).to_contain_text("it will not be shown again")
    second = page.get_by_label("Token").input_value()
    assert second != first and _works(world, second)

    page.get_by_role("link", name="Back to the API clients").click()
    first_id = token["token_id"]
    page.get_by_role("button", name=f"Revoke token {first_id} of Night sync").click()
    expect(page.get_by_role("status")).to_have_text("The token was revoked: it no longer works.")
    assert not _works(world, first) and _works(world, second)
    page.get_by_text("Revoke Night sync…").click()
    page.get_by_role("button", name="Revoke Night sync and all its tokens").click()
    expect(page.get_by_role("status")).to_have_text(
        "The API client and all its tokens were revoked."
    )
    expect(page.get_by_role("article", name=re.compile("Night sync"))).to_contain_text("revoked")
    assert not _works(world, second)
    assert_accessible(page)


def test_api_clients_are_the_administrators_own_and_bad_forms_change_nothing(
    world: World,
) -> None:
    _refused_pages(world, "/admin/api-clients")
    before = _clients(world)
    engine = world.server.archive.engine
    clin = store.create_api_client(engine, "Clinic robot", world.pks["CLIN"], ["sender"])
    clin_token = store.issue_api_token(engine, clin.pk or 0, ["read"], None)
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/api-clients")
    token = _csrf(admin)
    good = {"name": "Robot", "role": "viewer", "scope": "read"}
    radiologist = world.page("hosp-radiologist")
    radiologist.goto("/institutions/HOSP")
    forged = radiologist.request.post(
        "/institutions/HOSP/admin/api-clients",
        form={**good, "csrf_token": _csrf(radiologist)},
        max_redirects=0,
    )
    assert forged.status == 403
    base = "/institutions/HOSP/admin/api-clients"
    cases: list[tuple[str, dict[str, str], bool, int]] = [
        (base, good, False, 403),  # no CSRF token
        (base, {**good, "name": ""}, True, 400),
        (base, {"name": "Robot", "scope": "read"}, True, 400),  # no role
        (base, {**good, "role": "emperor"}, True, 400),
        (base, {**good, "scope": "everything"}, True, 400),
        (base, {"name": "Robot", "role": "viewer"}, True, 400),  # no scope
        (base, {**good, "expires_days": "0"}, True, 400),
        (base, {**good, "expires_days": "soon"}, True, 400),
        (base, {**good, "name": "x" * 200}, True, 400),
        (f"{base}/{clin.pk}/tokens", {"scope": "read"}, True, 404),  # CLIN's client
        (f"{base}/{clin.pk}/revoke", {}, True, 404),
        (f"{base}/{clin.pk}/tokens/{clin_token.record.token_id}/revoke", {}, True, 404),
        (f"{base}/x1/revoke", {}, True, 400),
        (f"{base}/99999/revoke", {}, True, 404),
        (f"{base}/{clin.pk}/tokens/NOT-HEX/revoke", {}, True, 400),
    ]
    for target, form, with_token, status in cases:
        fields = {**form, **({"csrf_token": token} if with_token else {})}
        answer = admin.request.post(target, form=fields, max_redirects=0)
        assert answer.status == status, (target, form, answer.status)
    assert _clients(world) == before
    assert _works(world, clin_token.token)
    assert not store.get_api_client(engine, clin.pk or 0).disabled
    answer = admin.goto("/institutions/HOSP/admin/api-clients")
    assert answer is not None and answer.status == 200


# --- failed jobs and transfers --------------------------------------------------------------


def _system_administrator(world: World) -> None:
    """`root`: a system administrator who also administers HOSP (pages are a member's)."""
    engine = world.server.archive.engine
    user = store.create_user(engine, "root@ferry.test", name="Root", system_admin=True)
    change_user(engine, user.pk or 0, password_hash=password_hash())
    store.set_membership(engine, user.pk or 0, world.pks["HOSP"], ["admin"])


def _parked(world: World, kind: str, payload: dict[str, Any], error: str) -> int:
    queue = JobQueue(world.server.archive.engine)
    queue.add(kind, payload, max_attempts=1)
    claimed = queue.claim(frozenset({kind}))
    assert claimed is not None
    queue.fail(claimed, error)
    return claimed.pk


def _failures(world: World) -> tuple[int, int]:
    """Failed transfers CLIN → HOSP (HOSP's) and CLIN → FAR (not HOSP's); the parked job of
    the first, and a parked job of nobody's (Ferry's own work)."""
    engine = world.server.archive.engine
    now = datetime.now(UTC)
    made = []
    with Session(engine) as session:
        for destination, reason in (("HOSP", "HOSP_PACS refused 3 images"), ("FAR", "far away")):
            transfer = Transfer(
                study_instance_uid=f"1.2.3.{world.pks[destination]}",
                sender_institution_pk=world.pks["CLIN"],
                destination_institution_pk=world.pks[destination],
                status="failed",
                reason=reason,
                instances=3,
                created_at=now - timedelta(minutes=5),
                last_instance_at=now,
            )
            session.add(transfer)
            made.append(transfer)
        session.commit()
        hosp = made[0].pk
        error = "the node refused the association: called AE not recognised"
        job = _parked(world, "test-forward", {"transfer_pk": hosp}, error)
        made[0].job_pk = job
        session.add(made[0])
        session.commit()
    nobodys = _parked(world, "test-system", {"sweep": "all"}, "the sweep stopped")
    return job, nobodys


def test_a_system_administrator_retries_a_parked_job(world: World) -> None:
    _system_administrator(world)
    job_pk, nobodys = _failures(world)
    page = world.page("root")
    page.goto("/institutions/HOSP/admin")
    page.get_by_role("link", name="Failed jobs and transfers").click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP/admin/jobs$"))
    failed = page.get_by_role("table", name="Failed transfers")
    expect(failed).to_contain_text("HOSP_PACS refused 3 images")
    expect(failed).not_to_contain_text("far away")  # CLIN → FAR is not HOSP's
    parked = page.get_by_role("table", name="Parked jobs")
    expect(parked.get_by_role("row", name=re.compile(f"#{job_pk}"))).to_contain_text(
        "called AE not recognised"
    )
    expect(parked.get_by_role("row", name=re.compile(f"#{nobodys}"))).to_contain_text(
        "the sweep stopped"
    )  # every job, Ferry's own too
    assert_accessible(page)
    snapshot(page, "admin-jobs")
    page.get_by_role("button", name=f"Retry job #{job_pk}").click()
    expect(page.get_by_role("status")).to_have_text("The job was sent round again.")
    expect(page.get_by_role("table", name="Parked jobs")).not_to_contain_text(f"#{job_pk}")
    job = JobQueue(world.server.archive.engine).get(job_pk)
    assert job is not None and (job.status, job.attempts) == ("queued", 0)
    again = page.request.post(
        f"/institutions/HOSP/admin/jobs/{job_pk}/retry",
        form={"csrf_token": _csrf(page)},
        max_redirects=0,
    )
    assert again.status == 409  # only a parked job is retried
    assert_accessible(page)


def test_an_institution_administrator_retries_only_the_jobs_of_its_transfers(
    world: World,
) -> None:
    job_pk, nobodys = _failures(world)
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/jobs")
    expect(admin.get_by_role("table", name="Failed transfers")).to_contain_text(
        "HOSP_PACS refused 3 images"
    )
    parked = admin.get_by_role("table", name="Parked jobs")
    expect(parked.get_by_role("row", name=re.compile(f"#{job_pk}"))).to_contain_text(
        "called AE not recognised"
    )
    expect(parked).not_to_contain_text("the sweep stopped")  # Ferry's own: the system's
    expect(admin.get_by_role("button", name=f"Retry job #{nobodys}")).to_have_count(0)
    expect(admin.get_by_text("other jobs are a system administrator's")).to_be_visible()
    assert_accessible(admin)
    forged = admin.request.post(
        f"/institutions/HOSP/admin/jobs/{nobodys}/retry",
        form={"csrf_token": _csrf(admin)},
        max_redirects=0,
    )
    assert forged.status == 404  # a job one may not see is one that is not there
    admin.get_by_role("button", name=f"Retry job #{job_pk}").click()
    expect(admin.get_by_role("status")).to_have_text("The job was sent round again.")
    expect(admin.get_by_role("table", name="Parked jobs")).to_contain_text("No parked job.")
    queue = JobQueue(world.server.archive.engine)
    job, other = queue.get(job_pk), queue.get(nobodys)
    assert job is not None and job.status == "queued"
    assert other is not None and other.status == "parked"
    assert_accessible(admin)


def test_failed_jobs_are_refused_to_who_may_not_see_them(world: World) -> None:
    _system_administrator(world)
    job_pk, _ = _failures(world)
    _refused_pages(world, "/admin/jobs")
    root = world.page("root")
    root.goto("/institutions/HOSP/admin/jobs")
    token = _csrf(root)
    base = "/institutions/HOSP/admin/jobs"
    cases: list[tuple[Any, str, bool, int]] = [
        (root, f"{base}/{job_pk}/retry", False, 403),  # no CSRF token
        (root, f"{base}/x1/retry", True, 400),
        (root, f"{base}/99999/retry", True, 404),
    ]
    for who, target, with_token, status in cases:
        fields = {"csrf_token": token} if with_token else {}
        answer = who.request.post(target, form=fields, max_redirects=0)
        assert answer.status == status, (target, answer.status)
    other = world.page("far-radiologist")
    other.goto("/institutions/FAR")
    forged = other.request.post(
        f"/institutions/FAR/admin/jobs/{job_pk}/retry",
        form={"csrf_token": _csrf(other)},
        max_redirects=0,
    )
    assert forged.status == 404  # their own institution, but the job is not theirs to see
    job = JobQueue(world.server.archive.engine).get(job_pk)
    assert job is not None and job.status == "parked"
    answer = root.goto(base)
    assert answer is not None and answer.status == 200


# --- holidays -------------------------------------------------------------------------------


def _holidays(world: World) -> list[dict[str, str]]:
    answer = world.api("hosp-admin", "GET", "/institutions/HOSP/holidays")
    assert answer.status_code == 200, answer.text
    holidays: list[dict[str, str]] = answer.json()
    return holidays


def test_an_administrator_adds_and_removes_a_holiday(world: World) -> None:
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin")
    page.get_by_role("link", name="Who may send to us, and when").click()
    holidays = page.get_by_role("table", name="Holidays")
    expect(holidays).to_contain_text("No holiday.")
    page.get_by_label("Day", exact=True).fill("2026-12-25")
    page.get_by_label("Name", exact=True).fill("Christmas Day")
    assert_accessible(page)
    page.get_by_role("button", name="Add the holiday").click()
    expect(page.get_by_role("status")).to_have_text("The holiday was added.")
    row = page.get_by_role("table", name="Holidays").get_by_role("row", name=re.compile("25 Dec"))
    expect(row).to_contain_text("25 Dec 2026")
    expect(row).to_contain_text("Christmas Day")
    assert _holidays(world) == [{"day": "2026-12-25", "name": "Christmas Day"}]
    assert_accessible(page)
    snapshot(page, "admin-holidays")
    page.get_by_role("button", name="Remove the holiday of 2026-12-25").click()
    expect(page.get_by_role("status")).to_have_text("The holiday was removed.")
    expect(page.get_by_role("table", name="Holidays")).to_contain_text("No holiday.")
    assert _holidays(world) == []


def test_holidays_are_the_administrators_own_and_bad_forms_change_nothing(world: World) -> None:
    _refused_pages(world, "/admin/rules")
    engine = world.server.archive.engine
    store.add_holiday(engine, world.pks["CLIN"], datetime(2026, 12, 26).date(), "Boxing Day")
    world.api("hosp-admin", "POST", "/institutions/HOSP/holidays", {"day": "2026-12-25"})
    before = _holidays(world)
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/rules")
    radiologist = world.page("hosp-radiologist")
    radiologist.goto("/institutions/HOSP")
    other = world.page("far-radiologist")
    other.goto("/institutions/FAR")
    add = "/institutions/HOSP/admin/holidays"
    good = {"day": "2027-01-01", "name": "New Year"}
    cases: list[tuple[Any, str, dict[str, str], bool, int]] = [
        (radiologist, add, good, True, 403),  # not an administrator
        (other, add, good, True, 404),  # not their institution
        (admin, "/institutions/CLIN/admin/holidays", good, True, 404),  # beyond theirs
        (admin, "/institutions/CLIN/admin/holidays/2026-12-26/remove", {}, True, 404),
        (admin, add, good, False, 403),  # no CSRF token
        (admin, add, {"day": "", "name": "x"}, True, 400),
        (admin, add, {"day": "2026-13-01"}, True, 400),
        (admin, add, {"day": "tomorrow"}, True, 400),
        (admin, add, {"day": "2027-01-01", "name": "x" * 200}, True, 400),
        (admin, add, {"day": "2026-12-25"}, True, 409),  # already a holiday
        (admin, "/institutions/HOSP/admin/holidays/25-12-2026/remove", {}, True, 400),
        (admin, "/institutions/HOSP/admin/holidays/2026-12-25x/remove", {}, True, 400),
        (admin, "/institutions/HOSP/admin/holidays/2026-12-24/remove", {}, True, 404),
        (admin, "/institutions/HOSP/admin/holidays/2026-12-25/remove", {}, False, 403),
    ]
    for who, target, form, with_token, status in cases:
        fields = {**form, **({"csrf_token": _csrf(who)} if with_token else {})}
        answer = who.request.post(target, form=fields, max_redirects=0)
        assert answer.status == status, (target, form, answer.status)
    assert _holidays(world) == before
    clin = store.list_holidays(engine, world.pks["CLIN"])
    assert [(h.day.isoformat(), h.name) for h in clin] == [("2026-12-26", "Boxing Day")]
    answer = admin.goto("/institutions/HOSP/admin/rules")
    assert answer is not None and answer.status == 200
