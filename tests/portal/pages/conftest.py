"""Pages in a real Chromium: one browser for the session, a live uvicorn per test, two
institutions and their people, axe-core on every page, screenshots for the docs on request.

- `browser`: Debian's /usr/bin/chromium through Playwright, shared by every test of the session
  (skipped without them, unless FERRY_TEST_REQUIRE names `browser`).
- `world`: the server's HOSP (Harbour Hospital, the receiver, with a node HOSP_PACS) and CLIN
  (Clinic North, the sender), destination rules both ways, people of both, CLIN's studies; and
  FAR (Far Away Imaging), a third institution whose people must see none of it.
- `world.page(who)`: a browser page signed in as that person (session cookies set the way the
  sign-in form sets them); `world.anonymous()`: a page nobody signed in to.
- `assert_accessible(page)`: axe-core (tests/portal/vendor/axe.min.js, pinned) finds no serious
  or critical violation on the page as it is.
- `snapshot(page, name)`: with FERRY_SCREENSHOTS=<folder> set, the page is saved there as
  <name>.png (`make screenshots` writes docs/screenshots/); otherwise it does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy import store
from policy.models import RetrieveMethod
from tests import factories
from tests.conftest import CHROMIUM, RunningServer, issue_token_for
from tests.dimse.test_remote import RemotePacs
from tests.factories import StudySpec, write_series
from tests.policy._people import PASSWORD, change_user, hashed_password

AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"
BLOCKING = ("serious", "critical")
PEOPLE = {
    "clin-sender": {"CLIN": "sender,receiver,viewer"},
    "clin-requester": {"CLIN": "requester"},
    "hosp-radiologist": {"HOSP": "receiver,viewer,sender"},
    "hosp-requester": {"HOSP": "requester"},
    "hosp-admin": {"HOSP": "admin"},
    "hosp-viewer": {"HOSP": "viewer"},
    "far-radiologist": {"FAR": "receiver,viewer,sender,requester"},
}


@pytest.fixture(scope="session")
def browser(playwright_session: Any) -> Iterator[Any]:
    """One Chromium for the session, from the process's one Playwright (tests/conftest.py)."""
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"]
    launched = playwright_session.chromium.launch(executable_path=str(CHROMIUM), args=args)
    yield launched
    launched.close()


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """Pages test what people see; the data layer is tested on both databases elsewhere."""
    return sqlite_database_url


def assert_accessible(page: Any) -> None:
    """No serious or critical axe-core violation (WCAG 2 A and AA rules and best practice)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    blocking = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v["impact"] in BLOCKING
    ]
    assert blocking == [], f"{page.url}:\n" + "\n".join(blocking)


def snapshot(page: Any, name: str) -> None:
    folder = os.environ.get("FERRY_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@dataclass
class World:
    server: RunningServer
    browser: Any
    pks: dict[str, int]
    tokens: dict[str, str]
    studies: dict[str, StudySpec] = field(default_factory=dict)
    contexts: list[Any] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.server.base_url

    def email(self, who: str) -> str:
        return f"{who}@ferry.test"

    def api(self, who: str, method: str, path: str, body: object = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.tokens[who]}"}
        with httpx.Client(base_url=self.base, timeout=60) as http:
            return http.request(method, f"/api{path}", headers=headers, json=body)

    def send(self, study: str, *, priority: str = "routine", note: str = "") -> str:
        """CLIN sends one of its studies to HOSP's worklist; the transfer's opaque id."""
        report = {"title": "Report", "text": f"{study}: no acute finding."}
        body = {
            "institution": "CLIN",
            "destination": "HOSP",
            "studies": [self.studies[study].study_uid],
            "priority": priority,
            "note": note,
            "send": True,
            "reports": [report],
        }
        answer = self.api("clin-sender", "POST", "/transfers", body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def anonymous(self) -> Any:
        context = self.browser.new_context(base_url=self.base, bypass_csp=True)  # axe is injected
        self.contexts.append(context)
        return context.new_page()

    def page(self, who: str) -> Any:
        """A page whose context holds `who`'s session cookies."""
        context = self.browser.new_context(base_url=self.base, bypass_csp=True)  # axe is injected
        self.contexts.append(context)
        answer = context.request.post(
            "/auth/login", data={"email": self.email(who), "password": PASSWORD}
        )
        assert answer.ok, answer.text()
        return context.new_page()


@pytest.fixture
def world(server: RunningServer, browser: Any, tmp_path: Path) -> Iterator[World]:
    engine = server.archive.engine
    hosp = server.institution_pk
    store.update_institution(engine, hosp, name="Harbour Hospital", timezone="Europe/London")
    clin = store.create_institution(engine, "CLIN", "Clinic North", timezone="Europe/Paris").pk
    far = store.create_institution(engine, "FAR", "Far Away Imaging").pk
    assert clin is not None and far is not None
    store.create_destination_rule(engine, hosp, sender_institution_pk=clin)
    store.create_destination_rule(engine, clin, sender_institution_pk=hosp)
    factories.create_node(engine, hosp, "HOSP_PACS", "127.0.0.1", 11112, can_write=True)
    pks = {"HOSP": hosp, "CLIN": clin, "FAR": far}
    tokens = {}
    for who, memberships in PEOPLE.items():
        user = store.create_user(engine, f"{who}@ferry.test", name=_name(who))
        change_user(engine, user.pk or 0, password_hash=password_hash())
        for code, roles in memberships.items():
            store.set_membership(engine, user.pk or 0, pks[code], roles.split(","))
        tokens[who] = issue_token_for(server.app, server.archive, user.pk or 0)
    built = World(server, browser, pks, tokens)
    for name, patient, modality in (("chest", "PAT-1", "CT"), ("head", "PAT-2", "MR")):
        spec = StudySpec(
            patient_id=patient, patient_name=f"Doe^{name.title()}", modality=modality,
            accession_number=f"ACC-{patient}", study_description=f"{name.title()} study",
        )  # fmt: skip
        paths = write_series(tmp_path / name, 2, spec=spec)
        assert all(o.stored for o in server.archive.store_files(paths, None, clin))
        built.studies[name] = spec
    yield built
    for context in built.contexts:
        context.close()


def password_hash() -> str:
    """Hashed once a session (per hashing parameters, see tests/policy/_people.py): argon2 is
    slow on purpose, and every person shares the password."""
    return hashed_password(PASSWORD)


def _name(who: str) -> str:
    return who.replace("-", " ").title()


PACS_PATIENT = "PAT-PACS"


@pytest.fixture
def pacs(world: World) -> Iterator[RemotePacs]:
    """CLIN's PACS: two studies of the patient asked for, one of someone else."""
    remote = RemotePacs("CLIN_PACS", {})
    for accession in ("ACC-P1", "ACC-P2"):
        spec = StudySpec(
            patient_id=PACS_PATIENT,
            patient_name="Pacs^Paula",
            accession_number=accession,
            study_description=f"CT {accession}",
        )
        remote.add_study(spec, 2)
    remote.add_study(StudySpec(patient_id="SOMEONE-ELSE", accession_number="ACC-X"), 1)
    factories.create_node(
        world.server.archive.engine, world.pks["CLIN"], "CLIN_PACS", "127.0.0.1", remote.port,
        can_query=True, can_write=True, retrieve_method=RetrieveMethod.GET.value,
    )  # fmt: skip
    try:
        yield remote
    finally:
        remote.stop()
