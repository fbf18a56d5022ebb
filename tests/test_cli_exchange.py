"""`ferry transfer`, `ferry worklist`, `ferry download` as a user would run them."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from archive.store import Archive
from policy import store
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
    stranger = ferry_cli("transfer", "show", "--as", "s@a.test", "AAAAAAAAAAAAAAAA")
    assert stranger.code == 1 and "no transfer" in stranger.err
