"""`ferry policy explain` and `what-if` as an administrator runs them (through the entry point,
in this process: `ferry_cli`, tests/conftest.py)."""

from __future__ import annotations

from typing import Any

from archive.store import Archive
from tests import factories
from tests.policy._people import add_institution, add_user


def _stored_study(archive: Archive, institution_pk: int) -> str:
    ds = factories.ct_slice()
    path = archive.blobs.spool_dir / "cli-policy.dcm"
    path.write_bytes(factories.part10_bytes(ds))
    [outcome] = archive.store_files([path], institution_pk=institution_pk)
    assert outcome.stored
    return str(ds.StudyInstanceUID)


def test_explain_names_the_rule_and_what_if_lists_the_changes(
    ferry_cli: Any, archive: Archive
) -> None:
    a = add_institution(archive.engine, "EXA")
    b = add_institution(archive.engine, "EXB")
    add_user(archive.engine, "viewer@exa.test", memberships={a: "viewer"})
    study = _stored_study(archive, b)
    refused = ferry_cli(
        "policy",
        "explain",
        "--user",
        "viewer@exa.test",
        "--study",
        study,
        "--action",
        "search",
    )
    assert refused.code == 1, refused.err
    assert "DENIED by rule default-deny" in refused.out
    assert "principal-active -> owner-membership -> active-grant -> default-deny" in refused.out
    change = ferry_cli(
        "policy",
        "what-if",
        "--user",
        "viewer@exa.test",
        "--institution",
        "EXB",
        "--roles",
        "receiver",
    )
    assert change.code == 0, change.err
    assert f"user:viewer@exa.test gains download on study {study}" in change.out
    assert "3 change(s)" in change.out  # search, read-pixels, download; not delete
    allowed = ferry_cli(
        "policy",
        "explain",
        "--user",
        "viewer@exa.test",
        "--study",
        study,
        "--action",
        "download",
    )
    assert allowed.code == 1  # what-if changed nothing


def test_explain_of_an_unknown_user_is_a_clear_error(ferry_cli: Any, archive: Archive) -> None:
    result = ferry_cli(
        "policy",
        "explain",
        "--user",
        "nobody@x.test",
        "--study",
        "1.2.3",
        "--action",
        "search",
    )
    assert result.code != 0
    assert "Traceback" not in result.err
