"""`ferry request create|list|show|answer|reject|cancel` as a user would run them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archive.store import Archive
from policy import store
from tests.factories import StudySpec, write_series


def test_create_list_show_answer_then_cancel_is_refused(
    ferry_cli: Any, archive: Archive, tmp_path: Path
) -> None:
    engine = archive.engine
    gp = store.create_institution(engine, "GP", "GP").pk
    a = store.create_institution(engine, "A", "A").pk
    c = store.create_institution(engine, "C", "C").pk
    store.create_destination_rule(engine, gp, sender_institution_pk=a)
    for email, pk, roles in (
        ("doc@gp.test", gp, "requester"),
        ("s@a.test", a, "sender"),
        ("x@c.test", c, "sender,requester"),
    ):
        user = store.create_user(engine, email)
        store.set_membership(engine, user.pk, pk, roles)
    spec = StudySpec(patient_id="CLI-REQ-1", accession_number="CLI-ACC")
    archive.store_files(write_series(tmp_path / "s", 2, spec=spec), None, a)

    made = ferry_cli(
        "request", "create", "--as", "doc@gp.test", "--institution", "GP", "--ask", "A",
        "--patient-id", "CLI-REQ-1", "--details", "all priors", "--urgency", "urgent",
    )  # fmt: skip
    assert made.code == 0, made.err
    rid = made.out.split()[0]
    assert "open" in made.out
    assert rid in ferry_cli("request", "list", "--as", "s@a.test").out
    stranger = ferry_cli("request", "show", "--as", "x@c.test", rid)
    assert stranger.code == 1 and "no request" in stranger.err
    refused = ferry_cli("request", "answer", "--as", "doc@gp.test", rid, "--study", spec.study_uid)
    assert refused.code == 1 and "may not answer" in refused.err
    answered = ferry_cli("request", "answer", "--as", "s@a.test", rid, "--study", spec.study_uid)
    assert answered.code == 0, answered.err
    assert "answered" in answered.out
    shown = ferry_cli("request", "show", "--as", "doc@gp.test", rid)
    states = [line.split()[2] for line in shown.out.splitlines() if line.startswith("  20")]
    assert states == ["open", "in-progress", "answered"]
    cancel = ferry_cli("request", "cancel", "--as", "doc@gp.test", rid)
    assert cancel.code == 1 and "answered" in cancel.err
    second = ferry_cli(
        "request", "create", "--as", "doc@gp.test", "--institution", "GP", "--ask", "A",
        "--patient-name", "Doe^Jane", "--birth-date", "19700101",
    ).out.split()[0]  # fmt: skip
    rejected = ferry_cli("request", "reject", "--as", "s@a.test", second, "--reason", "unknown")
    assert rejected.code == 0 and "rejected" in rejected.out
    empty = ferry_cli(
        "request", "create", "--as", "doc@gp.test", "--institution", "GP", "--ask", "A"
    )
    assert empty.code == 1 and "Patient ID" in empty.err
