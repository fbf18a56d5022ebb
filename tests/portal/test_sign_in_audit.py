"""The API's sign-ins (`POST /auth/token`, `POST /auth/login`) are audited as the portal's are,
name the person's institutions, fail closed, and reach each institution's own audit trail only.
Real uvicorn, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from audit.search import AuditQuery, search_events
from policy import store
from policy.models import UserStatus
from tests.conftest import RunningServer
from tests.policy._people import PASSWORD, add_institution, add_user

ADA, BEA, CAL = "ada@ferry.test", "bea@ferry.test", "cal@ferry.test"
_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


@pytest.fixture
def web(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def places(server: RunningServer) -> dict[str, int]:
    """A and B, their auditors; Ada in A, Bea in B, Cal in both."""
    engine = server.archive.engine
    pks = {"A": add_institution(engine, "A"), "B": add_institution(engine, "B")}
    add_user(engine, ADA, memberships={pks["A"]: "viewer"})
    add_user(engine, BEA, memberships={pks["B"]: "receiver"})
    add_user(engine, CAL, memberships={pks["A"]: "viewer", pks["B"]: "viewer"})
    add_user(engine, "a-auditor@ferry.test", memberships={pks["A"]: "auditor"})
    add_user(engine, "b-auditor@ferry.test", memberships={pks["B"]: "auditor"})
    return pks


def sign_ins(server: RunningServer, actor: str | None = None) -> list[Any]:
    """The `login` events, oldest first."""
    query = AuditQuery(action="login", actor=actor)
    return list(reversed(search_events(server.archive.engine, query, limit=1000).entries))


def token(web: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return web.post("/auth/token", json={"email": email, "password": password})


def test_a_password_grant_is_a_login_event_naming_the_persons_institutions(
    web: httpx.Client, server: RunningServer, places: dict[str, int]
) -> None:
    assert token(web, "CAL@ferry.test").status_code == 200
    [event] = sign_ins(server)
    assert (event.action, event.outcome, event.actor, event.actor_kind) == (
        "login", "allowed", f"user:{CAL}", "user",
    )  # fmt: skip
    detail = json.loads(event.detail)
    assert detail == {"protocol": "api", "path": "/auth/token", "method": "password",
                      "grant": "password", "institutions": sorted(places.values())}  # fmt: skip
    assert event.client_address == "127.0.0.1" and event.reason == ""
    assert PASSWORD not in repr(event)


@pytest.mark.parametrize(
    ("email", "password", "why", "status"),
    [
        (ADA, "not the right password", "wrong password", 401),
        ("nobody@ferry.test", PASSWORD, "no account has this email", 401),
        (ADA, "", "the field 'password' is required", 400),
    ],
)
def test_every_refused_grant_is_a_denied_login_event_with_why(
    web: httpx.Client,
    server: RunningServer,
    places: dict[str, int],
    email: str,
    password: str,
    why: str,
    status: int,
) -> None:
    refused = token(web, email, password)
    assert refused.status_code == status
    assert "wrong password" not in refused.text and "no account" not in refused.text
    [event] = sign_ins(server)
    assert (event.outcome, event.actor, event.reason) == ("denied", f"user:{email}", why)
    detail = json.loads(event.detail)
    known = [places["A"]] if email == ADA else None
    assert detail.get("institutions") == known
    assert password not in event.detail or not password


def test_locked_and_disabled_accounts_say_so_in_the_trail_only(
    web: httpx.Client, server: RunningServer, places: dict[str, int]
) -> None:
    engine = server.archive.engine
    user = store.find_user(engine, BEA)
    store.update_user(engine, user.pk or 0, status=UserStatus.DISABLED)
    assert token(web, BEA).status_code == 401
    assert sign_ins(server)[-1].reason == "the account is disabled"


def test_the_portals_json_sign_in_is_audited_the_same_way(
    web: httpx.Client, server: RunningServer, places: dict[str, int]
) -> None:
    assert web.post("/auth/login", json={"email": ADA, "password": "wrong!"}).status_code == 401
    assert "ferry_session" not in web.cookies
    signed_in = web.post("/auth/login", data={"username": ADA, "password": PASSWORD})
    assert signed_in.status_code == 200 and "ferry_session" in web.cookies
    refused, allowed = sign_ins(server)
    assert (refused.outcome, refused.reason, allowed.outcome) == ("denied", "wrong password",
                                                                  "allowed")  # fmt: skip
    for event in (refused, allowed):
        detail = json.loads(event.detail)
        assert (event.actor, detail["path"], detail["method"]) == (
            f"user:{ADA}", "/auth/login", "password",
        )  # fmt: skip
        assert detail["institutions"] == [places["A"]] and "grant" not in detail


def test_the_audit_search_command_finds_api_and_portal_sign_ins_alike(
    web: httpx.Client, server: RunningServer, places: dict[str, int], ferry_cli: Any
) -> None:
    token(web, ADA)
    [form_token] = _FORM_TOKEN.findall(web.get("/sign-in").text)
    fields = {"form_token": form_token, "email": ADA, "password": PASSWORD}
    assert web.post("/sign-in", data=fields).status_code == 303
    found = ferry_cli("audit", "search", "--actor", f"user:{ADA}", "--action", "login", "--json")
    assert found.code == 0, found.err
    events = json.loads(found.out)["events"]
    assert [e["detail"]["protocol"] for e in events] == ["portal", "api"]
    assert all(e["detail"]["institutions"] == [places["A"]] for e in events)


def _refuse_audit_writes(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(text(
                "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_event "
                "BEGIN SELECT RAISE(ABORT, 'the audit disk is gone'); END"
            ))  # fmt: skip
            return
        connection.execute(text(
            "CREATE FUNCTION audit_refused() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the audit disk is gone'; END $$"
        ))  # fmt: skip
        connection.execute(text(
            "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_event "
            "FOR EACH ROW EXECUTE FUNCTION audit_refused()"
        ))  # fmt: skip


def _allow_audit_writes(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(text("DROP TRIGGER audit_refused"))
            return
        connection.execute(text("DROP TRIGGER audit_refused ON audit_event"))
        connection.execute(text("DROP FUNCTION audit_refused()"))


def test_no_sign_in_when_its_event_cannot_be_written(
    web: httpx.Client, server: RunningServer, places: dict[str, int]
) -> None:
    engine = server.archive.engine
    _refuse_audit_writes(engine)
    try:
        granted = token(web, ADA)
        assert granted.status_code == 503 and "access_token" not in granted.text
        session = web.post("/auth/login", json={"email": ADA, "password": PASSWORD})
        assert session.status_code == 503 and "ferry_session" not in web.cookies
        assert token(web, ADA, "not the right password").status_code == 503
    finally:
        _allow_audit_writes(engine)
    assert sign_ins(server) == []
    assert token(web, ADA).status_code == 200  # the trail is back: so is signing in


def trail(web: httpx.Client, auditor: str) -> list[dict[str, Any]]:
    bearer = token(web, auditor).json()["access_token"]
    code = auditor[0].upper()
    answer = web.get("/api/oversight/audit", params={"institution": code, "action": "login",
                                                     "limit": 1000},
                     headers={"authorization": f"Bearer {bearer}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json()["events"] if "auditor" not in e["actor"]]


def test_each_institution_sees_its_own_peoples_sign_ins_and_no_others(
    web: httpx.Client, server: RunningServer, places: dict[str, int]
) -> None:
    for email in (ADA, BEA, CAL):
        token(web, email)
    token(web, BEA, "not the right password")
    a_sees = {(e["actor"], e["outcome"]) for e in trail(web, "a-auditor@ferry.test")}
    b_sees = {(e["actor"], e["outcome"]) for e in trail(web, "b-auditor@ferry.test")}
    assert a_sees == {(f"user:{ADA}", "allowed"), (f"user:{CAL}", "allowed")}
    assert b_sees == {(f"user:{BEA}", "allowed"), (f"user:{BEA}", "denied"),
                      (f"user:{CAL}", "allowed")}  # fmt: skip


def test_a_sign_in_stays_with_the_institutions_of_its_moment(
    web: httpx.Client, server: RunningServer, places: dict[str, int]
) -> None:
    """Ada signs in as A's; she joins B later: B does not get her earlier sign-in, A keeps it."""
    engine = server.archive.engine
    token(web, ADA)
    ada = store.find_user(engine, ADA).pk or 0
    store.set_membership(engine, ada, places["B"], "viewer")
    store.remove_membership(engine, ada, places["A"])
    assert [e["actor"] for e in trail(web, "b-auditor@ferry.test")] == []
    assert [e["actor"] for e in trail(web, "a-auditor@ferry.test")] == [f"user:{ADA}"]
    token(web, ADA)
    assert [e["actor"] for e in trail(web, "b-auditor@ferry.test")] == [f"user:{ADA}"]
