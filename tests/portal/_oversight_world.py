"""A world with a history to oversee: A sends to B, B asks A, C pushes to A and sends to B.

Times (UTC), on a clock the app reads:
- 10 Jun 2026 10:00  A sends study ONE (PAT-1, CT, 3 instances) to B's worklist (transfer T1)
- 10 Jun 2026 12:00  B views T1; 14:00 B downloads it as a ZIP
- 11 Jun 2026 09:00  a node of C pushes a study to A (delivered to A's worklist; not in Ferry)
- 12 Jun 2026 08:00  B asks A for PAT-2 (accession ACC-PAT-2); 10:00 A answers with study TWO
                     (MR, 2 instances): transfer T2 to B's worklist
- 13 Jun 2026 08:00  C sends to B (none of A's business); A sends a transfer that fails
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

from audit.search import AuditQuery, iter_events
from exchange.models import Origin, Transfer, TransferEvent
from policy import store
from tests.conftest import RunningServer, issue_token_for
from tests.factories import StudySpec, write_series
from tests.policy._people import add_api_token

T0 = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)
PEOPLE = {
    "a-admin": {"A": "admin"},
    "a-auditor": {"A": "auditor"},
    "a-user": {"A": "sender,receiver,viewer"},
    "a-requester": {"A": "requester"},
    "b-admin": {"B": "admin"},
    "b-user": {"B": "receiver,viewer,requester"},
    "c-admin": {"C": "admin"},
    "c-auditor": {"C": "auditor"},
    "sec-auditor": {"A-SEC": "auditor"},
}


@dataclass
class World:
    server: RunningServer
    http: httpx.Client
    tokens: dict[str, str]
    pks: dict[str, int]
    ids: dict[str, str]  # transaction ids: t1, t2, request
    clock: list[datetime]

    def as_(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.as_(who), **kwargs.pop("headers", {})}
        return self.http.get(f"/api{path}", headers=headers, **kwargs)

    def post(self, who: str, path: str, body: object = None) -> httpx.Response:
        response = self.http.post(f"/api{path}", headers=self.as_(who), json=body or {})
        assert response.status_code in (200, 201), response.text
        return response

    def search(self, who: str, path: str, body: object, **kwargs: Any) -> httpx.Response:
        """`POST {path}/search` with the criteria as JSON: patient filters never in a URL."""
        headers = {**self.as_(who), **kwargs.pop("headers", {})}
        return self.http.post(f"/api{path}/search", headers=headers, json=body, **kwargs)

    def at(self, moment: datetime) -> None:
        self.clock[0] = moment

    def audit(self, **criteria: Any) -> list[Any]:
        return list(iter_events(self.server.archive.engine, AuditQuery(**criteria)))


def _push(engine: Any, sender: int, receiver: int, at: datetime, status: str, uid: str) -> str:
    with Session(engine, expire_on_commit=False) as session:
        transfer = Transfer(
            study_instance_uid=uid,
            sender_institution_pk=sender,
            destination_institution_pk=receiver,
            status=status,
            instances=4,
            created_at=at,
            last_instance_at=at,
            origin=Origin.PUSH.value,
        )
        session.add(transfer)
        session.flush()
        for step in ("on-worklist", status) if status == "delivered" else (status,):
            session.add(TransferEvent(transfer_pk=transfer.pk or 0, at=at + timedelta(minutes=5),
                                      actor="ferry", status=step))  # fmt: skip
        session.commit()
    return transfer.public_id


def build_world(server: RunningServer, tmp_path: Path) -> World:
    engine = server.archive.engine
    pks = {code: store.create_institution(engine, code, f"Institution {code}").pk or 0
           for code in ("A", "B", "C")}  # fmt: skip
    pks["A-SEC"] = store.create_institution(engine, "A-SEC", "Secure", parent_pk=pks["A"]).pk or 0
    for sender, receiver in (("A", "B"), ("C", "B")):
        store.create_destination_rule(engine, pks[receiver], sender_institution_pk=pks[sender])
    tokens: dict[str, str] = {}
    for who, memberships in PEOPLE.items():
        user = store.create_user(engine, f"{who}@ferry.test")
        for code, roles in memberships.items():
            store.set_membership(engine, user.pk, pks[code], roles)
        tokens[who] = issue_token_for(server.app, server.archive, user.pk)
    system = store.create_user(engine, "root@ferry.test", system_admin=True)
    tokens["system"] = issue_token_for(server.app, server.archive, system.pk)
    tokens["a-read-token"] = add_api_token(engine, pks["A"], roles="admin", scopes="read")[0]
    tokens["a-audit-token"] = add_api_token(engine, pks["A"], roles="auditor", scopes="audit")[0]
    specs = {}
    for name, patient, modality, count in (("one", "PAT-1", "CT", 3), ("two", "PAT-2", "MR", 2)):
        spec = StudySpec(patient_id=patient, accession_number=f"ACC-{patient}", modality=modality)
        paths = write_series(tmp_path / name, count, spec=spec)
        assert all(o.stored for o in server.archive.store_files(paths, None, pks["A"]))
        specs[name] = spec
    clock = [T0]
    server.app.state.clock = lambda: clock[0]
    http = httpx.Client(base_url=server.base_url, timeout=60)
    world = World(server, http, tokens, pks, {}, clock)
    _history(world, specs)
    return world


def opened_world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    """The world as a fixture's body: built, yielded, its HTTP client closed after the test."""
    world = build_world(server, tmp_path)
    try:
        yield world
    finally:
        world.http.close()


def _history(world: World, specs: dict[str, StudySpec]) -> None:
    engine = world.server.archive.engine
    t1 = world.post("a-user", "/transfers", {
        "institution": "A", "destination": "B", "studies": [specs["one"].study_uid], "send": True,
    }).json()["id"]  # fmt: skip
    world.at(T0 + timedelta(hours=2))
    world.post("b-user", f"/transfers/{t1}/viewer-link")
    world.at(T0 + timedelta(hours=4))
    download = world.http.get(f"/api/transfers/{t1}/download.zip", headers=world.as_("b-user"))
    assert download.status_code == 200
    push = _push(engine, world.pks["C"], world.pks["A"], T0 + timedelta(days=1, hours=-1),
                 "delivered", "1.2.826.0.1.999.1")  # fmt: skip
    world.at(T0 + timedelta(days=2, hours=-2))
    request = world.post("b-user", "/requests", {
        "institution": "B", "asked": "A", "patient": {"id": "PAT-2"},
        "accession_numbers": ["ACC-PAT-2"],
    }).json()["id"]  # fmt: skip
    world.at(T0 + timedelta(days=2))
    answer = {"studies": [{"study_uid": specs["two"].study_uid}]}
    world.post("a-user", f"/requests/{request}/answer", answer)
    [t2] = [
        e.transaction
        for e in world.audit(action="transfer", patient_id="PAT-2")
        if e.transaction != request
    ][:1]
    _push(engine, world.pks["C"], world.pks["B"], T0 + timedelta(days=3, hours=-2), "delivered",
          "1.2.826.0.1.999.2")  # fmt: skip
    failed = _push(engine, world.pks["A"], world.pks["C"], T0 + timedelta(days=3), "failed",
                   specs["one"].study_uid)  # fmt: skip
    world.ids.update(t1=t1, t2=t2, request=request, push=push, failed=failed)
