"""`ferry transfer`, `ferry worklist`, `ferry download` as a user would run them."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlmodel import Session, select

from archive.store import Archive
from dimse.context import BridgeContext
from dimse.forward import FORWARD_STUDY
from ferry.background import build_worker
from ferry.settings import Settings
from foundation.jobs import Job, JobQueue
from policy import store
from policy.models import RetrieveMethod
from tests import factories
from tests.dimse.test_remote import RemotePacs
from tests.factories import StudySpec, write_series


def test_create_send_list_show_worklist_download_and_refuse_cancel(
    ferry_cli: Any, archive: Archive, tmp_path: Path
) -> None:
    engine = archive.engine
    a = store.create_institution(engine, "A", "A").pk
    b = store.create_institution(engine, "B", "B").pk
    store.create_destination_rule(engine, b, sender_institution_pk=a)
    for email, pk, roles in (("s@a.test", a, "sender"), ("r@b.test", b, "receiver")):
        user = store.create_user(engine, email)
        store.set_membership(engine, user.pk, pk, roles)
    spec = StudySpec(patient_id="CLI-1")
    archive.store_files(write_series(tmp_path / "s", 2, spec=spec), None, a)
    made = ferry_cli(
        "transfer", "create", "--as", "s@a.test", "--institution", "A", "--to", "B",
        "--study", spec.study_uid, "--priority", "urgent", "--send",
    )  # fmt: skip
    assert made.code == 0, made.err
    tid = made.out.split()[0]
    assert "on-worklist" in made.out
    assert tid in ferry_cli("transfer", "list", "--as", "s@a.test").out
    shown = ferry_cli("transfer", "show", "--as", "r@b.test", tid)
    assert [line.split()[2] for line in shown.out.splitlines()[1:]] == [
        "draft", "sent", "on-worklist",
    ]  # fmt: skip
    assert "1 on the worklist" in ferry_cli("worklist", "--as", "r@b.test").out
    out = tmp_path / "t.zip"
    done = ferry_cli("download", "--as", "r@b.test", "--transfer", tid, "--zip", str(out))
    assert done.code == 0, done.err
    assert len(zipfile.ZipFile(out).namelist()) == 3
    assert "downloaded" in ferry_cli("transfer", "show", "--as", "s@a.test", tid).out
    stranger = ferry_cli("transfer", "show", "--as", "s@a.test", "AAAAAAAAAAAAAAAA")
    assert stranger.code == 1 and "no transfer" in stranger.err


def test_download_names_a_study_and_finds_the_transfer_that_brought_it(
    ferry_cli: Any, archive: Archive, tmp_path: Path
) -> None:
    engine = archive.engine
    a = store.create_institution(engine, "A", "A").pk
    b = store.create_institution(engine, "B", "B").pk
    c = store.create_institution(engine, "C", "C").pk
    assert a and b and c
    store.create_destination_rule(engine, b, sender_institution_pk=a)
    people = (("s@a.test", a, "sender"), ("r@b.test", b, "receiver"), ("q@b.test", b, "requester"),
              ("x@c.test", c, "receiver,sender"))  # fmt: skip
    for email, pk, roles in people:
        user = store.create_user(engine, email)
        store.set_membership(engine, user.pk, pk, roles)
    node = factories.create_node(engine, b, "PACS_B", "127.0.0.1", 11112, can_write=True).pk
    one, two = StudySpec(patient_id="CLI-1"), StudySpec(patient_id="CLI-2")
    for spec in (one, two):
        archive.store_files(write_series(tmp_path / spec.patient_id, 2, spec=spec), None, a)
    made = ferry_cli("transfer", "create", "--as", "s@a.test", "--institution", "A", "--to", "B",
                     "--study", one.study_uid, "--study", two.study_uid, "--send")  # fmt: skip
    tid = made.out.split()[0]
    by_study, by_transfer = tmp_path / "study.zip", tmp_path / "transfer.zip"
    done = ferry_cli("download", "--as", "r@b.test", "--study", two.study_uid, "--zip",
                     str(by_study))  # fmt: skip
    assert done.code == 0, done.err
    assert f"from transfer {tid}" in done.out
    ferry_cli("download", "--as", "r@b.test", "--transfer", tid, "--study", two.study_uid,
              "--zip", str(by_transfer))  # fmt: skip
    assert by_study.read_bytes() == by_transfer.read_bytes()  # the same selection, the same ZIP
    assert len(zipfile.ZipFile(by_study).namelist()) == 3  # two files and the DICOMDIR
    delivered = ferry_cli("download", "--as", "r@b.test", "--study", one.study_uid,
                          "--to-node", "PACS_B")  # fmt: skip
    assert delivered.code == 0 and "delivering" in delivered.out, delivered.err
    with Session(engine) as session:
        jobs = session.exec(select(Job).where(Job.kind == FORWARD_STUDY)).all()
    assert [orjson.loads(job.payload)["study_uid"] for job in jobs] == [one.study_uid]
    assert all(orjson.loads(job.payload)["node_pk"] == node for job in jobs)
    for who in ("x@c.test", "s@a.test"):  # another institution; the sender received nothing
        refused = ferry_cli("download", "--as", who, "--study", one.study_uid, "--zip",
                            str(tmp_path / "no.zip"))  # fmt: skip
        assert refused.code == 1 and "no transfer" in refused.err
    requester = ferry_cli("download", "--as", "q@b.test", "--study", one.study_uid, "--zip",
                          str(tmp_path / "no.zip"))  # fmt: skip
    assert requester.code == 1 and "no transfer" in requester.err
    assert not (tmp_path / "no.zip").exists()


def test_transfer_from_a_node_searches_by_c_find_then_fetches_and_sends_by_a_job(
    ferry_cli: Any, archive: Archive, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = archive.engine
    a = store.create_institution(engine, "A", "A").pk
    b = store.create_institution(engine, "B", "B").pk
    assert a and b
    store.create_destination_rule(engine, b, sender_institution_pk=a)
    for email, roles in (("s@a.test", "sender"), ("q@a.test", "requester")):
        user = store.create_user(engine, email)
        store.set_membership(engine, user.pk, a, roles)
    pacs = RemotePacs("PACS_A", {})
    try:
        spec = StudySpec(patient_id="NODE-1")
        pacs.add_study(spec, 2)
        factories.create_node(engine, a, "PACS_A", "127.0.0.1", pacs.port, can_query=True,
                          retrieve_method=RetrieveMethod.GET.value)  # fmt: skip
        found = ferry_cli("transfer", "search-node", "--as", "s@a.test", "--institution", "A",
                          "--node", "PACS_A", "--key", "PatientID=NODE-1")  # fmt: skip
        assert found.code == 0, found.err
        assert spec.study_uid in found.out and "1 studies on PACS_A" in found.out
        refused = ferry_cli("transfer", "search-node", "--as", "q@a.test", "--institution", "A",
                            "--node", "PACS_A", "--key", "PatientID=NODE-1")  # fmt: skip
        assert refused.code == 1 and "may not transfer" in refused.err
        made = ferry_cli("transfer", "create", "--as", "s@a.test", "--institution", "A",
                         "--to", "B", "--from-node", "PACS_A", "--study", spec.study_uid,
                         "--send")  # fmt: skip
        assert made.code == 0, made.err
        assert "fetching 1 studies from PACS_A" in made.out
        tid = made.out.split()[0]
        build_worker(BridgeContext(settings.dimse(), archive), settings).run_until_idle()
        shown = ferry_cli("transfer", "show", "--as", "s@a.test", tid)
        assert "on-worklist" in shown.out, shown.out
        assert len(archive.find_instances(spec.study_uid)) == 2
    finally:
        pacs.stop()
    down = ferry_cli("transfer", "search-node", "--as", "s@a.test", "--institution", "A",
                     "--node", "PACS_A", "--key", "PatientID=NODE-1")  # fmt: skip
    assert down.code == 1 and "PACS_A at 127.0.0.1:" in down.err  # a message, no traceback
    assert "Traceback" not in down.err
    monkeypatch.setenv("FERRY_FETCH_MAX_ATTEMPTS", "12")  # a PACS down for hours is waited for
    later = ferry_cli("transfer", "create", "--as", "s@a.test", "--institution", "A", "--to", "B",
                      "--from-node", "PACS_A", "--study", spec.study_uid, "--send")  # fmt: skip
    assert later.code == 0, later.err
    [job, _] = JobQueue(engine).list(kind="exchange.transfer-fetch")
    assert (job.status, job.max_attempts) == ("queued", 12)


def test_create_sends_pseudonymised_copies_with_a_profile(
    ferry_cli: Any, archive: Archive, settings: Settings, tmp_path: Path
) -> None:
    from exchange.pseudonymisation_profiles import ProfileRules, create_profile

    engine = archive.engine
    a = store.create_institution(engine, "A", "A").pk
    b = store.create_institution(engine, "B", "B").pk
    store.create_destination_rule(engine, b, sender_institution_pk=a)
    for email, pk, roles in (("s@a.test", a, "sender"), ("q@a.test", a, "requester"),
                             ("r@b.test", b, "receiver")):  # fmt: skip
        user = store.create_user(engine, email)
        store.set_membership(engine, user.pk, pk, roles)
    create_profile(engine, a or 0, "research", "", ProfileRules(),
                   now=datetime.now(UTC), created_by="test")  # fmt: skip
    spec = StudySpec(patient_id="CLI-PSN-1")
    archive.store_files(write_series(tmp_path / "s", 2, spec=spec), None, a)
    base = ("transfer", "create", "--institution", "A", "--to", "B", "--study", spec.study_uid)
    refused = ferry_cli(*base, "--as", "q@a.test", "--profile", "research", "--send")
    assert refused.code == 1 and "Traceback" not in refused.err
    unknown = ferry_cli(*base, "--as", "s@a.test", "--profile", "nobody-s", "--send")
    assert unknown.code == 1 and "no pseudonymisation profile" in unknown.err
    made = ferry_cli(*base, "--as", "s@a.test", "--profile", "research", "--send")
    assert made.code == 0, made.err
    assert "making pseudonymised copies of 1 studies with profile research" in made.out
    tid = made.out.split()[0]
    build_worker(BridgeContext(settings.dimse(), archive), settings).run_until_idle()
    shown = ferry_cli("transfer", "show", "--as", "r@b.test", tid)
    assert "on-worklist" in shown.out and "CLI-PSN-1" not in shown.out
    listed = ferry_cli("worklist", "--as", "r@b.test")
    assert "1 on the worklist" in listed.out and "CLI-PSN-1" not in listed.out
