"""`ferry policy explain` and `what-if` as an administrator runs them."""

from __future__ import annotations

import os
import subprocess
import sys

from archive.store import Archive
from ferry.settings import Settings
from tests import factories
from tests.policy._people import add_institution, add_user


def _ferry(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FERRY_DATA_DIR": str(settings.data_dir)}
    env["FERRY_DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stored_study(archive: Archive, institution_pk: int) -> str:
    ds = factories.ct_slice()
    path = archive.blobs.spool_dir / "cli-policy.dcm"
    path.write_bytes(factories.part10_bytes(ds))
    [outcome] = archive.store_files([path], institution_pk=institution_pk)
    assert outcome.stored
    return str(ds.StudyInstanceUID)


def test_explain_names_the_rule_and_what_if_lists_the_changes(settings, archive) -> None:
    a = add_institution(archive.engine, "EXA")
    b = add_institution(archive.engine, "EXB")
    add_user(archive.engine, "viewer@exa.test", memberships={a: "viewer"})
    study = _stored_study(archive, b)
    refused = _ferry(
        settings,
        "policy",
        "explain",
        "--user",
        "viewer@exa.test",
        "--study",
        study,
        "--action",
        "search",
    )
    assert refused.returncode == 1, refused.stderr
    assert "DENIED by rule default-deny" in refused.stdout
    assert "principal-active -> owner-membership -> active-grant -> default-deny" in refused.stdout
    change = _ferry(
        settings,
        "policy",
        "what-if",
        "--user",
        "viewer@exa.test",
        "--institution",
        "EXB",
        "--roles",
        "receiver",
    )
    assert change.returncode == 0, change.stderr
    assert f"user:viewer@exa.test gains download on study {study}" in change.stdout
    assert "3 change(s)" in change.stdout  # search, read-pixels, download; not delete
    allowed = _ferry(
        settings,
        "policy",
        "explain",
        "--user",
        "viewer@exa.test",
        "--study",
        study,
        "--action",
        "download",
    )
    assert allowed.returncode == 1  # what-if changed nothing


def test_explain_of_an_unknown_user_is_a_clear_error(settings, archive) -> None:
    result = _ferry(
        settings,
        "policy",
        "explain",
        "--user",
        "nobody@x.test",
        "--study",
        "1.2.3",
        "--action",
        "search",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
