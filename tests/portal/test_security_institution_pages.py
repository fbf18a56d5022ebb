"""A security institution's administration: the pages open for whom the API lets in, and refuse
whom it refuses, with the same status (one rule, `parent-administrator`, in `decide()`).
Real uvicorn and plain HTTP with a session cookie, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from policy import store
from tests.conftest import RunningServer
from tests.policy._people import PASSWORD, add_user

PAGES_AND_API = [
    ("/institutions/P-SEC/admin", "/api/institutions/P-SEC/registrations"),
    ("/institutions/P-SEC/admin/people", "/api/institutions/P-SEC/memberships"),
    ("/institutions/P-SEC/admin/nodes", "/api/institutions/P-SEC/nodes"),
    ("/institutions/P-SEC/admin/rules", "/api/institutions/P-SEC/destination-rules"),
    ("/institutions/P-SEC/admin/api-clients", "/api/institutions/P-SEC/api-clients"),
    # Its failed transfers (its parked jobs stay its own administrators': rule
    # `job-institution-administrator`; the page then leaves them out, the API answers 403)
    ("/institutions/P-SEC/admin/jobs", "/api/oversight/transfers?institution=P-SEC"),
]


@pytest.fixture
def people(server: RunningServer) -> dict[str, int]:
    """P and its security institution P-SEC, and U, unrelated to both."""
    engine = server.archive.engine
    parent = store.create_institution(engine, "P", "Parent Hospital").pk or 0
    secure = store.create_institution(engine, "P-SEC", "Cardiology", parent_pk=parent).pk or 0
    other = store.create_institution(engine, "U", "Unrelated Clinic").pk or 0
    add_user(engine, "p-admin@ferry.test", memberships={parent: "admin"})
    add_user(engine, "u-admin@ferry.test", memberships={other: "admin"})
    add_user(engine, "sec-viewer@ferry.test", memberships={secure: "viewer"})
    add_user(engine, "sec-admin@ferry.test", memberships={secure: "admin"})
    return {"P": parent, "P-SEC": secure, "U": other}


@pytest.fixture
def signed_in(server: RunningServer, people: dict[str, int]) -> Iterator[dict[str, httpx.Client]]:
    clients = {}
    for who in ("p-admin", "u-admin", "sec-viewer", "sec-admin"):
        client = httpx.Client(base_url=server.base_url, timeout=30)
        answer = client.post("/auth/login", json={"email": f"{who}@ferry.test",
                                                  "password": PASSWORD})  # fmt: skip
        assert answer.status_code == 200, answer.text
        clients[who] = client
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("p-admin", 200),  # the parent's administrator runs its settings
        ("sec-admin", 200),
        ("sec-viewer", 403),  # a member who may not administer: told why
        ("u-admin", 404),  # another institution's administrator: no such institution
    ],
)
def test_pages_and_api_agree_on_who_administers_a_security_institution(
    signed_in: dict[str, httpx.Client], who: str, status: int
) -> None:
    client = signed_in[who]
    for page, api in PAGES_AND_API:
        shown, answered = client.get(page), client.get(api)
        assert (shown.status_code, answered.status_code) == (status, status), (who, page, api)
        assert shown.headers["content-type"].startswith("text/html")
    if status == 200:
        assert "Cardiology" in client.get(PAGES_AND_API[0][0]).text


def test_the_parents_administrator_is_sent_on_to_administration_not_to_patients(
    signed_in: dict[str, httpx.Client],
) -> None:
    client = signed_in["p-admin"]
    dashboard = client.get("/institutions/P-SEC")
    assert dashboard.status_code == 303
    assert dashboard.headers["location"] == "/institutions/P-SEC/admin"
    # Oversight of the security institution's patients is not the parent's: 403 both ways.
    oversight = client.get("/institutions/P-SEC/oversight/audit")
    api = client.get("/api/oversight/audit", params={"institution": "P-SEC"})
    assert (oversight.status_code, api.status_code) == (403, 403)
    page = client.get("/institutions/P-SEC/admin").text
    assert 'href="/institutions/P-SEC/oversight' not in page  # no Oversight tab for them
    assert client.get("/institutions/P-SEC/send").status_code == 404
    assert client.get("/api/jobs", params={"institution": "P-SEC"}).status_code == 403
    assert signed_in["u-admin"].get("/institutions/P-SEC").status_code == 404
