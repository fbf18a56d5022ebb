"""Notification settings over the admin API, and the registration emails it causes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dimse.context import BridgeContext
from ferry.app import build_archive
from ferry.background import build_worker
from foundation.jobs import Worker
from policy import store
from tests.conftest import RunningServer, issue_token_for, make_settings, run_server
from tests.exchange._smtp import SmtpServer, smtp_server

PASSWORD = "correct horse battery staple"


@dataclass
class Site:
    server: RunningServer
    smtp: SmtpServer
    worker: Worker
    http: httpx.Client
    north: int

    def person(self, email: str, roles: str | None = None) -> dict[str, str]:
        engine = self.server.archive.engine
        user = store.create_user(engine, email, password=PASSWORD)
        if roles:
            store.set_membership(engine, user.pk or 0, self.north, roles)
        token = issue_token_for(self.server.app, self.server.archive, user.pk or 0)
        return {"authorization": f"Bearer {token}"}


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[Site]:
    with smtp_server() as smtp:
        settings = make_settings(
            tmp_path,
            database_url,
            dicom_port=0,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_starttls=False,
            mail_from="ferry@ferry.test",
        )
        archive = build_archive(settings)
        try:
            for server in run_server(settings, archive):
                worker = build_worker(BridgeContext(settings.dimse(), archive), settings)
                north = store.create_institution(archive.engine, "NORTH", "North Hospital")
                with httpx.Client(base_url=server.base_url, timeout=30) as http:
                    yield Site(server, smtp, worker, http, north.pk or 0)
        finally:
            archive.engine.dispose()


def test_a_person_sees_and_chooses_their_notifications(site):
    me = site.person("nina@north.test", "viewer")
    first = site.http.get("/api/me/notifications", headers=me)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "choice": "own",
        "default": True,
        "choices": ["all", "own", "failures", "none"],
        "sending": True,
    }
    changed = site.http.put("/api/me/notifications", headers=me, json={"choice": "failures"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["choice"] == "failures" and changed.json()["default"] is False
    assert site.http.get("/api/me/notifications", headers=me).json()["choice"] == "failures"


@pytest.mark.parametrize(
    "body",
    [{"choice": "sometimes"}, {"choice": "ALL"}, {}, {"choice": 1}, {"choice": "all", "x": 1}],
)
def test_bad_settings_are_refused_with_a_reason(site, body):
    me = site.person("nina@north.test", "viewer")
    refused = site.http.put("/api/me/notifications", headers=me, json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"].startswith("choice") or "x" in refused.json()["error"]
    assert site.http.get("/api/me/notifications", headers=me).json()["choice"] == "own"


def test_only_people_have_notification_settings(site):
    engine = site.server.archive.engine
    client = store.create_api_client(engine, "ai-tool", site.north, ["viewer"])
    issued = store.issue_api_token(engine, client.pk or 0, ["read"], None)
    tool = {"authorization": f"Bearer {issued.token}"}
    refused = site.http.get("/api/me/notifications", headers=tool)
    assert refused.status_code == 403 and "only people" in refused.json()["error"]
    assert site.http.get("/api/me/notifications").status_code == 401


def test_a_registration_is_announced_to_admins_and_its_answer_to_the_person(site):
    admin = site.person("admin@north.test", "admin")
    site.person("quiet-admin@north.test", "admin")
    site.http.put("/api/me/notifications", headers=admin, json={"choice": "all"})
    site.person("viewer@north.test", "viewer")
    quiet = site.person("other@north.test", "admin")
    site.http.put("/api/me/notifications", headers=quiet, json={"choice": "none"})
    body = {"email": "new@north.test", "name": "New Person", "password": PASSWORD}
    posted = site.http.post("/api/registrations", json={**body, "institution": "NORTH"})
    assert posted.status_code == 202, posted.text
    site.worker.run_until_idle()
    mailbox = site.smtp.mailbox
    [waiting] = mailbox.to("admin@north.test")
    assert waiting.subject == "[Ferry] Registration waiting at North Hospital (NORTH)"
    [pending] = site.http.get("/api/registrations", headers=admin).json()
    assert f"/portal/registrations/{pending['pk']}" in waiting.texts()["text/plain"]
    assert "New Person" not in waiting.raw.decode() and "new@north.test" not in waiting.raw.decode()
    assert len(mailbox.to("quiet-admin@north.test")) == 1  # addressed to admins: their own
    assert mailbox.to("viewer@north.test") == [] and mailbox.to("other@north.test") == []

    approved = site.http.post(
        f"/api/registrations/{pending['pk']}/approve", headers=admin, json={"roles": ["viewer"]}
    )
    assert approved.status_code == 200, approved.text
    site.worker.run_until_idle()
    [welcome] = mailbox.to("new@north.test")
    assert welcome.subject == "[Ferry] Registration approved at North Hospital (NORTH)"
    assert f"{site.server.settings.public_url}/auth/login" in welcome.texts()["text/plain"]


def test_a_rejected_registration_is_told_to_the_person(site):
    admin = site.person("admin@north.test", "admin")
    body = {"email": "late@north.test", "name": "Late", "password": PASSWORD}
    site.http.post("/api/registrations", json={**body, "institution": "NORTH"})
    [pending] = site.http.get("/api/registrations", headers=admin).json()
    rejected = site.http.post(
        f"/api/registrations/{pending['pk']}/reject", headers=admin, json={"note": "unknown"}
    )
    assert rejected.status_code == 200, rejected.text
    site.worker.run_until_idle()
    [mail] = site.smtp.mailbox.to("late@north.test")
    assert mail.subject == "[Ferry] Registration rejected at North Hospital (NORTH)"
    assert "/portal/" not in mail.raw.decode()
    listed = site.http.get("/api/notifications?institution=NORTH", headers=admin)
    assert listed.status_code == 200, listed.text
    events = sorted((row["event"], row["email"], row["status"]) for row in listed.json())
    assert events == [
        ("registration-rejected", "late@north.test", "sent"),
        ("registration-waiting", "admin@north.test", "sent"),
    ]
