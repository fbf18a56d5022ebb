"""No oracles: unknown things and other institutions' things answer alike, over a real server."""

from __future__ import annotations

import httpx
from sqlmodel import Session, select

from audit.models import AuditEvent
from policy.models import User
from tests.conftest import RunningServer
from tests.policy._people import add_institution
from tests.portal.test_admin_api import PASSWORD, _study


def test_registration_answers_alike_for_an_unknown_institution(world) -> None:
    def register(code: str, email: str) -> httpx.Response:
        body = {"email": email, "name": "N", "password": PASSWORD, "institution": code}
        return world.http.post("/api/registrations", json=body)

    known, unknown = register("NORTH", "k@x.test"), register("NOWHERE", "u@x.test")
    assert known.status_code == unknown.status_code == 202
    assert known.json() == {
        **unknown.json(),
        "message": unknown.json()["message"].replace("NOWHERE", "NORTH"),
    }
    with Session(world.server.archive.engine) as session:
        assert session.exec(select(User).where(User.email == "u@x.test")).first() is None
        [event] = session.exec(select(AuditEvent).where(AuditEvent.rule == "unknown-institution"))
    assert (event.action, event.outcome) == ("register", "denied")
    assert "nothing registered" in event.reason
    bad = register("NOWHERE", "not an email")
    assert bad.status_code == 422  # input is still checked first


def test_explain_does_not_reveal_other_institutions_people(world) -> None:
    uid = _study(world.server, world.pks["NORTH"])

    def ask(email: str) -> httpx.Response:
        query = {"user": email, "study": uid, "action": "search"}
        return world.get("north-admin", "/explain", params=query)

    theirs, nobody = ask("sa@south.test"), ask("nobody@south.test")
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["error"].replace("sa@", "nobody@") == nobody.json()["error"]
    assert ask("both@ferry.test").status_code == 200  # also a member of NORTH
    assert (
        world.get(
            "system", "/explain", params={"user": "sa@south.test", "study": uid, "action": "search"}
        ).status_code
        == 200
    )


def test_stow_answers_alike_for_an_unknown_and_another_institution(server: RunningServer) -> None:
    add_institution(server.archive.engine, "OTHER")
    headers = {
        **server.headers,
        "content-type": 'multipart/related; type="application/dicom"; boundary=b',
    }
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--b--\r\n"

    def store(code: str) -> httpx.Response:
        url = f"{server.dicomweb_url}/studies?institution={code}"
        return httpx.post(url, headers=headers, content=body, timeout=30)

    other, unknown = store("OTHER"), store("NOWHERE")
    assert other.status_code == unknown.status_code == 403
    assert other.text.replace("OTHER", "NOWHERE") == unknown.text
