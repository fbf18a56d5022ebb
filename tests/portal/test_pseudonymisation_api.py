"""Research copies over the real HTTP API: a hospital's profiles, and transfers of copies.

Hospital HOSP keeps a profile "research" (the basic profile, keeping the patient's sex and the
study description, dates shifted, the institution's name set); its sender sends a study to the
research group RES with that profile. RES receives a copy whose patient is a pseudonym and whose
UIDs are new; it never sees the original. C is another institution with an administrator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlmodel import Session

from audit.search import AuditQuery, iter_events
from dimse.context import BridgeContext
from exchange.grants import add_grant
from exchange.history import read_history
from exchange.notifications import NOTIFY
from exchange.parties import load_transfer
from ferry.background import build_worker
from foundation.jobs import JobQueue, Worker
from policy import store
from tests.conftest import RunningServer, issue_token_for
from tests.factories import StudySpec, write_series
from tests.policy._people import add_api_token

PATIENT = "HOSP-PAT-77"
PROFILES = "/institutions/GH/pseudonymisation-profiles"
RESEARCH = {
    "name": "research",
    "description": "lung nodule cohort",
    "keep": ["PatientSex", "StudyDescription"],
    "remove": ["SeriesDescription"],
    "replace": {"InstitutionName": "RESEARCH COPY"},
    "dates": "shift",
}


@dataclass
class World:
    server: RunningServer
    http: httpx.Client
    tokens: dict[str, str]
    worker: Worker
    original: StudySpec

    def headers(self, who: str) -> dict[str, str]:
        token = self.tokens[who]
        return {"authorization": f"Bearer {token}"}

    def call(self, who: str, method: str, path: str, body: object = None) -> httpx.Response:
        return self.http.request(method, f"/api{path}", headers=self.headers(who), json=body)

    def send(self, who: str = "hosp-sender", **fields: Any) -> httpx.Response:
        body = {"institution": "GH", "destination": "RES",
                "studies": [self.original.study_uid], **fields}  # fmt: skip
        return self.call(who, "POST", "/transfers", body)

    def audit(self, **criteria: Any) -> list[Any]:
        return list(iter_events(self.server.archive.engine, AuditQuery(**criteria)))


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    engine = server.archive.engine
    hosp = store.create_institution(engine, "GH", "General Hospital").pk
    res = store.create_institution(engine, "RES", "Imaging Research Group").pk
    c = store.create_institution(engine, "C", "Elsewhere").pk
    assert hosp and res and c
    store.create_destination_rule(engine, res, sender_institution_pk=hosp)  # its worklist
    people = {
        "hosp-admin": {hosp: "admin"},
        "hosp-sender": {hosp: "sender,viewer"},
        "hosp-requester": {hosp: "requester"},
        "res-receiver": {res: "receiver,viewer"},
        "res-auditor": {res: "auditor"},
        "hosp-auditor": {hosp: "auditor"},
        "c-admin": {c: "admin,sender"},
    }
    tokens = {}
    for who, memberships in people.items():
        user = store.create_user(engine, f"{who}@ferry.test")
        for institution_pk, roles in memberships.items():
            store.set_membership(engine, user.pk, institution_pk, roles)
        tokens[who] = issue_token_for(server.app, server.archive, user.pk)
    tokens["hosp-read-only"] = add_api_token(engine, hosp, roles="admin", scopes="read")[0]
    original = StudySpec(patient_id=PATIENT, patient_name="Doe^Jane", patient_sex="F",
                         accession_number="ACC-77", study_description="CT chest")  # fmt: skip
    paths = write_series(tmp_path / "original", 3, spec=original)
    assert all(o.stored for o in server.archive.store_files(paths, None, hosp))
    worker = build_worker(BridgeContext(server.settings.dimse(), server.archive), server.settings)
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield World(server, http, tokens, worker, original)


def test_administrators_keep_profiles_and_nobody_else_changes_them(world: World) -> None:
    created = world.call("hosp-admin", "POST", PROFILES, RESEARCH)
    assert created.status_code == 201, created.text
    profile = created.json()
    assert profile["keep"] == ["PatientSex", "StudyDescription"]
    assert profile["replace"] == {"InstitutionName": "RESEARCH COPY"}
    assert profile["dates"] == "shift" and profile["private_tags"] == "remove"
    assert profile["basic_profile"].startswith("PS3.15")
    assert "secret" not in created.text
    listed = world.call("hosp-sender", "GET", PROFILES)  # a sender chooses one
    assert [p["name"] for p in listed.json()] == ["research"]

    for who in ("hosp-sender", "hosp-requester", "hosp-read-only"):
        refused = world.call(who, "POST", PROFILES, {**RESEARCH, "name": f"by-{who}"})
        assert refused.status_code == 403, (who, refused.text)
    assert world.call("hosp-requester", "GET", PROFILES).status_code == 403
    missing = world.call("c-admin", "GET", "/institutions/NOPE/pseudonymisation-profiles")
    for who in ("c-admin", "res-receiver"):  # another institution, the transfers' receiver
        for method, path in (("GET", PROFILES), ("POST", PROFILES),
                             ("DELETE", f"{PROFILES}/research")):  # fmt: skip
            body = {**RESEARCH, "name": "theirs"} if method == "POST" else None
            hidden = world.call(who, method, path, body)
            assert hidden.status_code == 404, (who, method, hidden.text)
            assert hidden.json()["error"] == missing.json()["error"].replace("NOPE", "GH")
    assert [p["name"] for p in world.call("hosp-admin", "GET", PROFILES).json()] == ["research"]

    removed = world.call("hosp-admin", "DELETE", f"{PROFILES}/research")
    assert removed.status_code == 204
    assert world.call("hosp-admin", "GET", f"{PROFILES}/research").status_code == 404


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"keep": ["NoSuchKeyword"]}, 400, "not a DICOM keyword"),
        ({"keep": ["PatientID"]}, 400, "always pseudonymised"),
        ({"replace": {"StudyInstanceUID": "1.2.3"}}, 400, "always pseudonymised"),
        ({"keep": ["PatientSex"], "remove": ["(0010,0040)"]}, 400, "one rule per attribute"),
        ({"replace": {"InstitutionName": "x" * 65}}, 422, ""),
        ({"replace": {"PatientWeight": "heavy"}}, 400, "not a valid DS value for PatientWeight"),
        ({"replace": {"Modality": "ct scan"}}, 400, "not a valid CS value"),
        ({"replace": {"Rows": "512"}}, 400, "Rows is not a text attribute"),
        ({"replace": {"(0009,1001)": "x"}}, 400, "not a text attribute"),
        ({"dates": "sometimes"}, 422, ""),
        ({"name": ""}, 422, ""),
        ({"name": "a/b"}, 422, ""),
        ({"secret": "00"}, 422, ""),
        ({"keep": ["PatientSex"] * 201}, 422, ""),
    ],
)
def test_bad_profiles_are_refused_with_a_reason(
    world: World, change: dict[str, Any], status: int, words: str
) -> None:
    refused = world.call("hosp-admin", "POST", PROFILES, {**RESEARCH, **change})
    assert refused.status_code == status, refused.text
    assert words in refused.text
    assert world.call("hosp-admin", "GET", PROFILES).json() == []  # nothing half-written
    assert world.call("hosp-admin", "POST", PROFILES, RESEARCH).status_code == 201  # still up
    twice = world.call("hosp-admin", "POST", PROFILES, RESEARCH)
    assert twice.status_code == 409 and "already a profile" in twice.text


def _metadata(world: World, who: str, study: str) -> list[dict[str, Any]]:
    answer = world.http.get(f"/dicom-web/studies/{study}/metadata", headers=world.headers(who))
    assert answer.status_code == 200, answer.text
    documents: list[dict[str, Any]] = answer.json()
    return documents


def _value(document: dict[str, Any], tag: str) -> Any:
    values = document.get(tag, {}).get("Value")
    return values[0] if values else None


def test_the_receiver_gets_a_pseudonymised_copy_never_the_original(world: World) -> None:
    assert world.call("hosp-admin", "POST", PROFILES, RESEARCH).status_code == 201
    created = world.send(profile="research", send=True, note="cohort 3")
    assert created.status_code == 201, created.text
    draft = created.json()
    assert draft["status"] == "draft" and draft["pseudonymised_with"] == "research"
    assert draft["studies"] == []  # the originals are never in it
    assert "making pseudonymised copies of 1 studies" in draft["history"][-1]["reason"]
    early = world.call("hosp-sender", "POST", f"/transfers/{draft['id']}/send", {})
    assert early.status_code == 409 and "still being added" in early.text
    assert world.call("res-receiver", "GET", f"/transfers/{draft['id']}").status_code == 404

    world.worker.run_until_idle()
    seen = world.call("res-receiver", "GET", f"/transfers/{draft['id']}").json()
    assert seen["status"] == "on-worklist" and seen["pseudonymised_with"] == "research"
    [study] = seen["studies"]
    copy_uid = study["study_uid"]
    assert copy_uid.startswith("2.25.") and copy_uid != world.original.study_uid
    assert study["patient_id"].startswith("PSN") and PATIENT not in str(seen)

    documents = _metadata(world, "res-receiver", copy_uid)
    assert len(documents) == 3
    text = str(documents)
    for identifying in (PATIENT, "Doe^Jane", "ACC-77", world.original.study_uid,
                        world.original.series_uid, "Referrer"):  # fmt: skip
        assert identifying not in text
    first = documents[0]
    assert _value(first, "00100040") == "F"  # PatientSex kept
    assert _value(first, "00081030") == "CT chest"  # StudyDescription kept
    assert _value(first, "00080080") == "RESEARCH COPY"  # InstitutionName set
    assert "0008103E" not in first  # SeriesDescription removed
    assert _value(first, "00120062") == "YES"  # Patient Identity Removed
    assert _value(first, "00280303") == "MODIFIED"  # Longitudinal Temporal Information Modified
    shifted = _value(first, "00080020")
    assert shifted and shifted < world.original.study_date  # moved back, kept as a date
    original = world.http.get(f"/dicom-web/studies/{world.original.study_uid}/metadata",
                              headers=world.headers("res-receiver"))  # fmt: skip
    assert original.status_code == 404  # exactly like a study that does not exist

    [event] = world.audit(action="pseudonymise", study_uid=world.original.study_uid)
    assert (event.patient_id, event.study_uid) == (PATIENT, world.original.study_uid)
    assert orjson.loads(event.detail) == {"transfer": draft["id"], "copy": copy_uid,
                                          "profile": "research"}  # fmt: skip
    theirs = world.call("res-auditor", "GET", "/oversight/audit?institution=RES&limit=1000")
    assert theirs.status_code == 200, theirs.text
    assert draft["id"] in theirs.text and copy_uid in theirs.text  # the transfer, its copy
    for identifying in (PATIENT, "ACC-77", world.original.study_uid):
        assert identifying not in theirs.text  # never the original, at the receiver
    ours = world.call("hosp-auditor", "POST", "/oversight/audit/search",
                      {"institution": "GH", "patient_id": PATIENT})  # fmt: skip
    assert ours.status_code == 200, ours.text
    assert copy_uid in ours.text  # the sender goes from the patient to the copy
    owner = world.server.archive.read_study_access(world.original.study_uid)
    assert owner is not None and event.institution_pk == owner.institution_pk  # the sender's

    again = world.send(profile="research", send=True)  # a later copy for the same cohort
    world.worker.run_until_idle()
    second = world.call("res-receiver", "GET", f"/transfers/{again.json()['id']}").json()
    assert second["status"] == "on-worklist"
    assert [s["study_uid"] for s in second["studies"]] == [copy_uid]
    assert second["studies"][0]["patient_id"] == study["patient_id"]  # the same pseudonym


def test_a_transfer_of_copies_is_refused_with_a_reason(world: World) -> None:
    unknown = world.send(profile="research")
    assert unknown.status_code == 400 and "no pseudonymisation profile" in unknown.text
    mine = {**RESEARCH, "name": "c-only"}
    assert world.call("c-admin", "POST", "/institutions/C/pseudonymisation-profiles",
                      mine).status_code == 201  # fmt: skip
    theirs = world.send(profile="c-only")  # another institution's profile is not HOSP's
    assert theirs.status_code == 400 and theirs.json()["error"] == unknown.json()["error"].replace(
        "research", "c-only"
    )
    assert world.call("hosp-admin", "POST", PROFILES, RESEARCH).status_code == 201
    empty = world.send(profile="research", studies=[])
    assert empty.status_code == 400 and "name the studies" in empty.text
    requester = world.send("hosp-requester", profile="research")
    assert requester.status_code == 403
    draft = world.send(profile="research").json()
    stow = world.http.post(
        f"/dicom-web/studies?transfer={draft['id']}", headers={
            **world.headers("hosp-sender"),
            "content-type": "multipart/related; type=\"application/dicom\"; boundary=x",
        }, content=b"--x--",
    )  # fmt: skip
    assert stow.status_code == 409 and "only the copies" in stow.text
    assert world.call("hosp-sender", "GET", f"/transfers/{draft['id']}").status_code == 200


def test_a_destination_may_take_only_pseudonymised_copies(world: World) -> None:
    engine = world.server.archive.engine
    lab = store.create_institution(engine, "LAB", "Reading Lab").pk
    admin = store.create_user(engine, "lab-admin@ferry.test")
    store.set_membership(engine, admin.pk, lab or 0, "admin")
    world.tokens["lab-admin"] = issue_token_for(world.server.app, world.server.archive, admin.pk)
    rule = world.call("lab-admin", "POST", "/institutions/LAB/destination-rules",
                      {"sender": "GH", "pseudonymised_only": True})  # fmt: skip
    assert rule.status_code == 201 and rule.json()["pseudonymised_only"] is True, rule.text
    assert world.call("hosp-admin", "POST", PROFILES, RESEARCH).status_code == 201

    options = world.call("hosp-sender", "GET", "/destinations?institution=GH").json()
    [lab_option] = [o for o in options["allowed"] if o["institution"] == "LAB"]
    assert lab_option["pseudonymised_only"] is True
    [res_option] = [o for o in options["allowed"] if o["institution"] == "RES"]
    assert res_option["pseudonymised_only"] is False

    studies = world.send(destination="LAB", send=True)
    assert studies.status_code == 403
    assert studies.json()["error"] == "LAB takes only pseudonymised copies from this sender"
    refusals = world.audit(action="transfer", outcome="denied")
    assert [(e.rule, e.study_uid) for e in refusals] == [
        ("pseudonymised-only", world.original.study_uid)
    ]  # audited
    copies = world.send(destination="LAB", profile="research", send=True)
    assert copies.status_code == 201, copies.text
    world.worker.run_until_idle()
    sent = world.call("hosp-sender", "GET", f"/transfers/{copies.json()['id']}").json()
    assert sent["status"] == "on-worklist" and sent["destination"] == "LAB"


def test_the_job_decides_again_for_whom_it_copies(world: World) -> None:
    """The copies are made later, by the worker, for the person who asked: a person whose
    rights went meanwhile gets no copy (and the draft stays unsent, saying why)."""
    assert world.call("hosp-admin", "POST", PROFILES, RESEARCH).status_code == 201
    created = world.send(profile="research", send=True)
    assert created.status_code == 201, created.text
    engine = world.server.archive.engine
    sender = store.find_user(engine, "hosp-sender@ferry.test")
    gh = world.server.archive.read_study_access(world.original.study_uid)
    assert gh is not None and gh.institution_pk is not None
    store.set_membership(engine, sender.pk, gh.institution_pk, "requester")
    world.worker.run_until_idle()
    transfer = load_transfer(engine, created.json()["id"])
    assert transfer.status == "draft"
    reasons = [change.reason for change in read_history(engine, transfer.pk or 0)]
    assert (
        "that you may see" in reasons[-2] and reasons[-1] == "not sent: 1 of 1 studies not copied"
    )
    assert world.audit(action="pseudonymise") == []  # nothing was copied
    assert world.call("res-receiver", "GET", f"/transfers/{transfer.public_id}").status_code == 404
    [email] = JobQueue(engine).list(kind=NOTIFY)  # the sending institution hears of it
    assert orjson.loads(email.payload)["event"] == "transfer-not-sent"


def test_copies_are_made_of_the_institutions_own_studies_only(world: World, tmp_path: Path) -> None:
    """A study another institution shared with this one stays its owner's to share: no copy
    of it becomes this institution's."""
    engine = world.server.archive.engine
    owner = world.server.archive.read_study_access(world.original.study_uid)
    c = next(i for i in store.list_institutions(engine) if i.code == "C")
    assert owner is not None and owner.institution_pk is not None and c.pk is not None
    theirs = StudySpec(patient_id="C-PAT-1")
    paths = write_series(tmp_path / "theirs", 1, spec=theirs)
    assert all(o.stored for o in world.server.archive.store_files(paths, None, c.pk))
    with Session(engine) as session:
        add_grant(session, theirs.study_uid, owner.institution_pk, now=datetime.now(UTC),
                  reason="shared for a second opinion")  # fmt: skip
        session.commit()
    assert world.call("hosp-admin", "POST", PROFILES, RESEARCH).status_code == 201
    refused = world.send(profile="research", studies=[theirs.study_uid])
    assert refused.status_code == 400
    assert "is not this institution's own" in refused.json()["error"]
    assert world.audit(action="pseudonymise") == []


def test_an_administrator_previews_what_a_profile_makes_of_a_study(world: World) -> None:
    assert world.call("hosp-admin", "POST", PROFILES, RESEARCH).status_code == 201
    path = f"{PROFILES}/research/preview"
    body = {"study": world.original.study_uid}
    shown = world.call("hosp-admin", "POST", path, body)
    assert shown.status_code == 200, shown.text
    answer = shown.json()
    assert answer["copy_study"].startswith("2.25.") and answer["profile"] == "research"
    by_keyword = {a["keyword"]: a for a in answer["attributes"]}
    assert by_keyword["PatientID"]["before"] == PATIENT
    assert by_keyword["PatientID"]["after"].startswith("PSN")
    assert by_keyword["PatientSex"]["what"] == "kept"
    assert by_keyword["SeriesDescription"]["what"] == "removed"
    assert by_keyword["InstitutionName"]["after"] == "RESEARCH COPY"
    assert by_keyword["AccessionNumber"]["what"] == "emptied"
    assert by_keyword["PatientIdentityRemoved"]["what"] == "added"
    assert "PixelData" not in by_keyword  # the header only
    [event] = world.audit(action="pseudonymise", actor="user:hosp-admin@ferry.test")
    assert (event.rule, event.patient_id) == ("preview", PATIENT)
    assert world.audit(action="transfer") == []  # nothing was sent or made

    # Nobody but the institution's administrators: a sender, a read-only token, another
    # institution's administrator, the receiving institution.
    for who, status in (("hosp-sender", 403), ("hosp-read-only", 403), ("c-admin", 404),
                        ("res-receiver", 404)):  # fmt: skip
        refused = world.call(who, "POST", path, body)
        assert refused.status_code == status, (who, refused.text)
    assert world.call("hosp-admin", "POST", f"{PROFILES}/nobody-s/preview",
                      body).status_code == 404  # fmt: skip
    bad = world.call("hosp-admin", "POST", path, {"study": "not-a-uid"})
    assert bad.status_code == 422
    unknown = world.call("hosp-admin", "POST", path, {"study": "1.2.3.4.5"})
    assert unknown.status_code == 400 and "that you may see" in unknown.text
