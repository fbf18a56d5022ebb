"""Administration pages: registrations waiting (approve with roles, reject with a reason), people
and their roles; and everyone who may not administer the institution is refused."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests._peers import start_scp
from tests.conftest import free_port
from tests.policy._people import PASSWORD
from tests.portal.pages.conftest import World, assert_accessible, snapshot


def _register(world: World, email: str, name: str, institution: str = "HOSP") -> None:
    body = {"email": email, "name": name, "password": PASSWORD, "institution": institution}
    with httpx.Client(base_url=world.base, timeout=30) as http:
        answer = http.post("/api/registrations", json=body)
    assert answer.status_code == 202, answer.text


def _signs_in(world: World, email: str) -> int:
    with httpx.Client(base_url=world.base, timeout=30) as http:
        return http.post("/auth/login", data={"email": email, "password": PASSWORD}).status_code


def _members(world: World) -> dict[str, list[str]]:
    answer = world.api("hosp-admin", "GET", "/institutions/HOSP/memberships")
    assert answer.status_code == 200, answer.text
    return {m["email"]: sorted(m["roles"]) for m in answer.json()}


def test_an_administrator_approves_a_registration_with_roles(world: World) -> None:
    _register(world, "nora@ferry.test", "Nora New")
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP")
    page.get_by_role("link", name="Administration").click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP/admin$"))
    registration = page.get_by_role("article", name=re.compile("Nora New"))
    expect(registration).to_contain_text("nora@ferry.test")
    assert_accessible(page)
    snapshot(page, "admin-registrations")
    registration.get_by_label(re.compile("^receiver")).check()
    registration.get_by_role("button", name="Approve Nora New").click()
    expect(page.get_by_role("status")).to_have_text(
        "The registration was approved: the person was emailed."
    )
    expect(page.get_by_role("article", name=re.compile("Nora New"))).to_have_count(0)
    assert _members(world)["nora@ferry.test"] == ["receiver", "viewer"]
    assert _signs_in(world, "nora@ferry.test") in (200, 303)


def test_an_administrator_rejects_a_registration_with_a_reason(world: World) -> None:
    _register(world, "rex@ferry.test", "Rex Wrong")
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin")
    page.get_by_text("Reject Rex Wrong…").click()
    page.get_by_label("Reason, sent to the person").fill("Not one of our staff")
    page.get_by_role("button", name="Reject Rex Wrong").click()
    expect(page.get_by_role("status")).to_have_text(
        "The registration was rejected: the person was emailed."
    )
    page.get_by_label("Show", exact=True).select_option("rejected")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("article", name=re.compile("Rex Wrong"))).to_contain_text(
        "Not one of our staff"
    )
    assert "rex@ferry.test" not in _members(world)
    assert _signs_in(world, "rex@ferry.test") == 401


def test_an_administrator_changes_a_persons_roles(world: World) -> None:
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin/people")
    row = page.get_by_role("row", name=re.compile("hosp-requester@ferry.test"))
    row.get_by_label("viewer").check()
    assert_accessible(page)
    snapshot(page, "admin-people")
    row.get_by_role("button", name="Save the roles of hosp-requester@ferry.test").click()
    expect(page.get_by_role("status")).to_have_text("The roles were saved.")
    assert _members(world)["hosp-requester@ferry.test"] == ["requester", "viewer"]


def _csrf(page: Any) -> str:
    token: str = page.evaluate(
        "() => JSON.parse(document.body.getAttribute('hx-headers') || '{}')['X-CSRF-Token'] || ''"
    )
    return token


def test_who_may_not_administer_is_refused(world: World) -> None:
    _register(world, "nora@ferry.test", "Nora New")
    radiologist = world.page("hosp-radiologist")
    radiologist.goto("/institutions/HOSP")
    expect(radiologist.get_by_role("link", name="Administration")).to_have_count(0)
    for path in ("/institutions/HOSP/admin", "/institutions/HOSP/admin/people"):
        answer = radiologist.goto(path)
        assert answer is not None and answer.status == 403, path
    other = world.page("far-radiologist")
    for path in ("/institutions/HOSP/admin", "/institutions/HOSP/admin/people"):
        answer = other.goto(path)
        assert answer is not None and answer.status == 404, path  # not theirs: as if missing
    admin = world.page("hosp-admin")
    answer = admin.goto("/institutions/CLIN/admin")
    assert answer is not None and answer.status == 404  # beyond their institutions
    [waiting] = world.api("hosp-admin", "GET", "/registrations").json()
    radiologist.goto("/institutions/HOSP")
    forged = radiologist.request.post(
        f"/institutions/HOSP/admin/registrations/{waiting['pk']}",
        form={"csrf_token": _csrf(radiologist), "decision": "approve", "role": "admin"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "nora@ferry.test" not in _members(world)


def test_bad_administration_forms_get_a_reason_and_change_nothing(world: World) -> None:
    _register(world, "nora@ferry.test", "Nora New")
    [waiting] = world.api("hosp-admin", "GET", "/registrations").json()
    page = world.page("hosp-admin")
    page.goto("/institutions/HOSP/admin")
    token = _csrf(page)
    path = f"/institutions/HOSP/admin/registrations/{waiting['pk']}"
    cases = [
        (path, {"decision": "approve", "role": "admin"}, False, 403),  # no CSRF token
        (path, {"decision": "approve"}, True, 400),  # no role
        (path, {"decision": "approve", "role": "emperor"}, True, 400),
        (path, {"decision": "reject", "note": "x" * 5000}, True, 400),
        ("/institutions/HOSP/admin/registrations/99999", {"role": "viewer"}, True, 404),
        ("/institutions/HOSP/admin/registrations/x1", {"role": "viewer"}, True, 400),
        ("/institutions/HOSP/admin/people/99999", {"role": "viewer"}, True, 404),
    ]
    for target, form, with_token, status in cases:
        fields = {**form, **({"csrf_token": token} if with_token else {})}
        answer = page.request.post(target, form=fields, max_redirects=0)
        assert answer.status == status, (target, form, answer.status)
    assert "nora@ferry.test" not in _members(world)
    assert page.goto("/institutions/HOSP/admin") is not None
    expect(page.get_by_role("article", name=re.compile("Nora New"))).to_be_visible()


def test_an_administrator_adds_a_node_and_a_rule_and_a_refused_send_shows_why(
    world: World,
) -> None:
    sender = world.page("far-radiologist")
    sender.goto("/institutions/FAR/send")
    sender.get_by_text(re.compile(r"Not allowed now")).click()
    refused = sender.locator(".left-out li", has_text="HOSP").first
    expect(refused).to_be_visible()
    reason = refused.inner_text()
    assert "HOSP" in reason and len(reason.split(": ", 1)[1]) > 5  # the rules' own words
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/nodes")
    admin.get_by_role("textbox", name=re.compile("^AE title")).fill("HOSP_CT")
    admin.get_by_label("Host").fill("127.0.0.1")
    admin.get_by_label("Port").fill("11113")
    admin.get_by_label("deliver studies to it (C-STORE)").check()
    assert_accessible(admin)
    snapshot(admin, "admin-nodes")
    admin.get_by_role("button", name="Add the node").click()
    expect(admin.get_by_role("status")).to_have_text("The node was added.")
    expect(admin.get_by_role("row", name=re.compile("HOSP_CT"))).to_contain_text("deliver")
    admin.get_by_role("link", name="Who may send to us, and when").click()
    admin.get_by_label("From", exact=True).select_option("FAR")
    admin.get_by_label("To", exact=True).select_option(label="node HOSP_CT")
    assert_accessible(admin)
    snapshot(admin, "admin-rules")
    admin.get_by_role("button", name="Add the rule").click()
    expect(admin.get_by_role("status")).to_have_text("The rule was added.")
    expect(admin.get_by_role("table", name="Destination rules")).to_contain_text("node HOSP_CT")
    sender.goto("/institutions/FAR/send")
    offered = sender.locator("input[name=destination]")
    expect(offered).to_have_value("HOSP:HOSP_CT")


def test_core_hours_are_saved_and_bad_hours_refused(world: World) -> None:
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/rules")
    for day in ("Saturday", "Sunday"):
        admin.get_by_label(day).uncheck()
    for day in ("Monday", "Friday"):
        admin.get_by_label(day).check()
    admin.get_by_label("From (HH:MM)").fill("07:30")
    admin.get_by_label("To (HH:MM)").fill("18:00")
    admin.get_by_role("button", name="Save the core hours").click()
    expect(admin.get_by_role("status")).to_have_text("The core hours were saved.")
    hours = world.api("hosp-admin", "GET", "/institutions/HOSP/hours").json()
    assert hours["start"] == "07:30" and hours["end"] == "18:00"
    assert 1 in hours["weekdays"] and 6 not in hours["weekdays"]
    token = _csrf(admin)
    bad = admin.request.post(
        "/institutions/HOSP/admin/hours",
        form={"csrf_token": token, "weekday": "1", "start": "25:00", "end": "18:00"},
        max_redirects=0,
    )
    assert bad.status == 400
    assert world.api("hosp-admin", "GET", "/institutions/HOSP/hours").json() == hours


def test_nodes_and_rules_are_the_administrators_own(world: World) -> None:
    radiologist = world.page("hosp-radiologist")
    for path in ("/institutions/HOSP/admin/nodes", "/institutions/HOSP/admin/rules"):
        answer = radiologist.goto(path)
        assert answer is not None and answer.status == 403, path
    admin = world.page("hosp-admin")
    for path in ("/institutions/CLIN/admin/nodes", "/institutions/CLIN/admin/rules"):
        answer = admin.goto(path)
        assert answer is not None and answer.status == 404, path
    clin_nodes = world.api("clin-sender", "GET", "/institutions/CLIN/destination-rules")
    assert clin_nodes.status_code in (403, 404)
    [clin_rule] = [
        r
        for r in world.api("hosp-admin", "GET", "/institutions/HOSP/destination-rules").json()
        if r["sender_institution_pk"] == world.pks["CLIN"]
    ]
    other = world.page("far-radiologist")
    other.goto("/institutions/FAR/send")
    forged = other.request.post(
        f"/institutions/FAR/admin/rules/{clin_rule['pk']}/remove",
        form={"csrf_token": _csrf(other)},
        max_redirects=0,
    )
    assert forged.status in (403, 404)
    admin.goto("/institutions/HOSP/admin/rules")
    bad_node = admin.request.post(
        "/institutions/HOSP/admin/nodes",
        form={"csrf_token": _csrf(admin), "ae_title": "BAD\\AE", "host": "x", "port": "99999"},
        max_redirects=0,
    )
    assert bad_node.status == 400
    rules = world.api("hosp-admin", "GET", "/institutions/HOSP/destination-rules").json()
    assert clin_rule in rules


def test_an_administrator_gives_and_takes_a_right_on_a_node(world: World) -> None:
    admin = world.page("hosp-admin")
    admin.goto("/institutions/HOSP/admin/nodes")
    admin.get_by_role("link", name="HOSP_PACS").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Node HOSP_PACS")
    admin.get_by_label("To", exact=True).select_option("role")
    admin.get_by_label("Role, email or institution code").fill("receiver")
    admin.get_by_label("deliver studies to it").check()
    assert_accessible(admin)
    admin.get_by_role("button", name="Give the right").click()
    expect(admin.get_by_role("status")).to_have_text("The right was given.")
    node_pk = admin.url.split("/nodes/")[1].split("?")[0]
    rights = world.api("hosp-admin", "GET", f"/nodes/{node_pk}/permissions").json()
    assert [(r["subject_kind"], r["subject"], r["can_write"]) for r in rights] == [
        ("role", "receiver", True)
    ]
    admin.get_by_role("button", name="Take away the right of receiver").click()
    expect(admin.get_by_role("status")).to_have_text("The right was taken away.")
    assert world.api("hosp-admin", "GET", f"/nodes/{node_pk}/permissions").json() == []
    radiologist = world.page("hosp-radiologist")
    answer = radiologist.goto(f"/institutions/HOSP/admin/nodes/{node_pk}")
    assert answer is not None and answer.status == 403
    other = world.page("far-radiologist")
    answer = other.goto(f"/institutions/FAR/admin/nodes/{node_pk}")
    assert answer is not None and answer.status in (403, 404)
    admin.goto(f"/institutions/HOSP/admin/nodes/{node_pk}")
    bad = admin.request.post(
        f"/institutions/HOSP/admin/nodes/{node_pk}/rights",
        form={"csrf_token": _csrf(admin), "subject_kind": "planet", "subject": "x"},
        max_redirects=0,
    )
    assert bad.status == 400
    assert world.api("hosp-admin", "GET", f"/nodes/{node_pk}/permissions").json() == []


def test_an_administrator_checks_a_node_answers_and_sees_why_one_does_not(world: World) -> None:
    scp = AE(ae_title="HOSP_ECHO")
    scp.add_supported_context(Verification)
    port = free_port()
    start_scp(scp, port)
    try:
        pks = {}
        for ae_title, node_port in (("HOSP_ECHO", port), ("HOSP_GONE", free_port())):
            node = {"ae_title": ae_title, "host": "127.0.0.1", "port": node_port}
            made = world.api("hosp-admin", "POST", "/institutions/HOSP/nodes", node)
            assert made.status_code == 201, made.text
            pks[ae_title] = made.json()["pk"]
        admin = world.page("hosp-admin")
        admin.goto(f"/institutions/HOSP/admin/nodes/{pks['HOSP_ECHO']}")
        admin.get_by_role("button", name="Check the connection (C-ECHO)").click()
        expect(admin.get_by_role("status")).to_contain_text(
            f"HOSP_ECHO at 127.0.0.1:{port} answered the C-ECHO in"
        )
        assert_accessible(admin)
        admin.goto(f"/institutions/HOSP/admin/nodes/{pks['HOSP_GONE']}")
        with admin.expect_response(re.compile("/echo$")) as checked:
            admin.get_by_role("button", name="Check the connection (C-ECHO)").click()
        assert checked.value.status == 502
        expect(admin.get_by_role("alert")).to_contain_text("No answer from the node: HOSP_GONE at")
        expect(admin.get_by_role("heading", level=1)).to_have_text("Node HOSP_GONE")
        assert_accessible(admin)

        path = f"/institutions/HOSP/admin/nodes/{pks['HOSP_ECHO']}/echo"
        no_csrf = admin.request.post(path, form={}, max_redirects=0)
        assert no_csrf.status == 403
        radiologist = world.page("hosp-radiologist")
        radiologist.goto("/institutions/HOSP")
        refused = radiologist.request.post(path, form={"csrf_token": _csrf(radiologist)})
        assert refused.status == 403
        far = world.page("far-radiologist")
        far.goto("/institutions/FAR")
        elsewhere = far.request.post(f"/institutions/FAR/admin/nodes/{pks['HOSP_ECHO']}/echo",
                                     form={"csrf_token": _csrf(far)})  # fmt: skip
        assert elsewhere.status in (403, 404)
    finally:
        scp.shutdown()
