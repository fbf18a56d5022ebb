"""`ferry admin ...` run as a user would, against a real database and server.

The commands run through `ferry`'s entry point in this process (`ferry_cli`, tests/conftest.py),
without a second of interpreter start-up a call; the installed script runs in a subprocess where
the entry point itself is the subject (a usage error's exit status, a password printed once and
then used to sign in).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlmodel import Session

from archive.models import Patient, Study
from archive.store import Archive
from exchange import grants
from ferry.settings import Settings
from policy import store
from tests.conftest import run_server

FERRY = Path(sys.executable).parent / "ferry"
PASSWORD = "a long enough password"


@pytest.fixture
def ferry(ferry_cli, archive: Archive):
    """Runs `ferry admin ARGS...` with the test's database; returns what it printed and its
    exit status as a finished process would."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return ferry_cli("admin", *args).completed(("admin", *args))

    return run


@pytest.fixture
def ferry_process(settings: Settings, archive: Archive):
    """Runs the installed `ferry admin ARGS...` script with the test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env |= {"FERRY_DATA_DIR": str(settings.data_dir), "FERRY_DATABASE_URL": settings.database_url}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FERRY), "admin", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def sign_in(base_url: str, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{base_url}/auth/login", json={"email": email, "password": password})


def test_institutions(ferry, archive):
    ok(ferry("create-institution", "NORTH", "North Hospital", "--timezone", "Europe/Paris"))
    made = ok(ferry("create-institution", "NORTH-CARD", "Cardiology", "--parent", "NORTH"))
    assert "NORTH-CARD" in made.stderr and "Europe/Paris" in made.stderr  # the parent's zone
    card = store.find_institution(archive.engine, "NORTH-CARD")
    assert card.parent_pk == store.find_institution(archive.engine, "NORTH").pk
    listing = ok(ferry("institutions")).stdout.splitlines()
    assert listing[0].split() == ["pk", "code", "name", "timezone", "parent"]
    assert any(line.split()[1] == "NORTH-CARD" and line.endswith("NORTH") for line in listing)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create-institution", "NORTH", "again"), "exists"),
        (("create-institution", "EAST", "East", "--timezone", "Mars/Base"), "unknown timezone"),
        (("create-institution", "has space", "x"), "code"),
        (("create-institution", "EAST", "East", "--parent", "NOPE"), "no institution 'NOPE'"),
        (("create-user", "a@b.test", "--institution", "NORTH"), "--roles"),
        (("create-user", "a@b.test", "--institution", "NORTH", "--roles", "wizard"), "wizard"),
        (("create-user", "a@b.test", "--system-admin", "--password", "short"), "password"),
        (("create-user", "not-an-email", "--system-admin"), "not an email"),
        (("create-api-client", "x", "--institution", "NORTH", "--roles", ""), "role"),
        (("create-api-client", "x", "--institution", "NORTH", "--roles", "viewer",
          "--scopes", "root"), "scope"),
        (("add-node", "--institution", "NORTH", "--ae-title", "WAY_TOO_LONG_AE_TITLE",
          "--host", "h", "--port", "104"), "AE title"),
        (("add-node", "--institution", "NORTH", "--ae-title", "OK", "--host", "h",
          "--port", "0"), "port"),
        (("grant", "--study", "1.2.3", "--institution", "NORTH"), "no study"),
    ],
)  # fmt: skip
def test_refusals_say_why(ferry, args, message):
    ok(ferry("create-institution", "NORTH", "North"))
    result = ferry(*args)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("ferry admin: ") and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("create-user", "a@b.test"),  # neither --system-admin nor --institution
        ("create-user", "a@b.test", "--system-admin", "--institution", "NORTH"),
        ("create-api-client", "x", "--institution", "NORTH", "--roles", "viewer",
         "--expires-days", "0"),
        ("add-node", "--institution", "NORTH", "--ae-title", "A", "--host", "h", "--port", "x"),
    ],
)  # fmt: skip
def test_usage_errors(ferry, args):
    result = ferry(*args)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_the_installed_script_exits_with_the_usage_or_the_refusal(ferry_process):
    usage = ferry_process("create-user", "a@b.test")  # neither --system-admin nor --institution
    assert usage.returncode == 2 and "usage:" in usage.stderr
    refused = ferry_process("create-institution", "has space", "x")
    assert refused.returncode == 1 and refused.stderr.startswith("ferry admin: ")
    assert "Traceback" not in refused.stderr


def test_users_sign_in_with_the_password_printed_once(ferry, ferry_process, settings, archive):
    ok(ferry("create-institution", "NORTH", "North"))
    created = ok(
        ferry_process("create-user", "root@ferry.test", "--name", "Root", "--system-admin")
    )
    [password] = created.stdout.splitlines()
    assert "shown once" in created.stderr
    member = ferry(
        "create-user",
        "ms@north.test",
        "--institution",
        "NORTH",
        "--roles",
        "sender,receiver",
        "--password",
        PASSWORD,
    )
    assert ok(member).stdout == ""  # nothing secret to print
    users = ok(ferry("users")).stdout
    assert "root@ferry.test" in users and "system-admin" in users
    assert "NORTH:receiver,sender" in ok(ferry("users", "--institution", "NORTH")).stdout
    server = run_server(settings, archive)
    running = next(server)
    try:
        assert sign_in(running.base_url, "root@ferry.test", password).status_code == 200
        assert sign_in(running.base_url, "ms@north.test", PASSWORD).status_code == 200
        assert sign_in(running.base_url, "ms@north.test", "wrong password!").status_code == 401
    finally:
        server.close()


def test_api_client_token_is_printed_once_and_works(ferry, settings, archive):
    ok(ferry("create-institution", "NORTH", "North"))
    result = ok(
        ferry(
            "create-api-client",
            "segmenter",
            "--institution",
            "NORTH",
            "--roles",
            "receiver",
            "--scopes",
            "read,download",
            "--expires-days",
            "30",
        )
    )
    [token] = result.stdout.splitlines()
    assert token.startswith("ferry_")
    [client] = store.list_api_clients(archive.engine)
    [stored] = store.list_api_tokens(archive.engine, client.pk)
    assert token.split("_", 2)[2] not in stored.secret_hash and stored.expires_at is not None
    server = run_server(settings, archive)
    running = next(server)
    try:
        me = httpx.get(f"{running.base_url}/auth/me", headers={"authorization": f"Bearer {token}"})
        assert me.status_code == 200
    finally:
        server.close()


def test_grant_and_revoke(ferry, archive):
    ok(ferry("create-institution", "NORTH", "North"))
    ok(ferry("create-institution", "SOUTH", "South"))
    north = store.find_institution(archive.engine, "NORTH")
    south = store.find_institution(archive.engine, "SOUTH")
    uid = generate_uid()
    with Session(archive.engine) as session:
        patient = Patient(patient_id="P1")
        session.add(patient)
        session.flush()
        session.add(
            Study(
                patient_pk=patient.pk,
                study_instance_uid=uid,
                institution_pk=north.pk,
                attrs_json=b"{}",
            )
        )
        session.commit()
    refused = ferry("grant", "--study", uid, "--institution", "SOUTH", "--actions", "read,delete")
    assert refused.returncode == 1 and "delete" in refused.stderr  # a grant never deletes
    ok(ferry("grant", "--study", uid, "--institution", "SOUTH", "--expires-days", "3"))
    [grant] = grants.list_grants(archive.engine, south.pk)
    assert grant.expires_at is not None and grant.revoked_at is None
    assert grant.actions == ("search", "read-metadata", "read-pixels", "download")
    assert ferry("grant", "--study", uid, "--institution", "SOUTH").returncode == 1  # live already
    assert ferry("grant", "--study", uid, "--institution", "NORTH").returncode == 1  # its own
    ok(ferry("revoke-grant", "--study", uid, "--institution", "SOUTH"))
    assert grants.list_grants(archive.engine, south.pk)[0].revoked_at is not None
    again = ferry("revoke-grant", "--study", uid, "--institution", "SOUTH")
    assert again.returncode == 1 and "no live grant" in again.stderr
    ok(ferry("grant", "--study", uid, "--institution", "SOUTH", "--actions", "search,read-pixels"))
    live = [g for g in grants.list_grants(archive.engine, south.pk) if g.revoked_at is None]
    assert [g.actions for g in live] == [("search", "read-pixels")]


def test_nodes(ferry, archive):
    ok(ferry("create-institution", "NORTH", "North"))
    ok(
        ferry(
            "add-node",
            "--institution",
            "NORTH",
            "--ae-title",
            "NORTH_PACS",
            "--host",
            "pacs.north",
            "--port",
            "11112",
            "--query",
            "--write",
            "--tls",
            "--unrestricted",
        )
    )
    [node] = store.list_nodes(archive.engine)
    assert (node.ae_title, node.port, node.tls, node.restricted) == (
        "NORTH_PACS",
        11112,
        True,
        False,
    )
    [permission] = store.list_node_permissions(archive.engine, node.pk)
    assert (permission.subject_kind, permission.subject) == ("institution", "NORTH")
    assert permission.can_query and permission.can_write
    listing = ok(ferry("nodes", "--institution", "NORTH")).stdout
    assert "NORTH_PACS" in listing and "pacs.north:11112" in listing
    duplicate = ferry(
        "add-node",
        "--institution",
        "NORTH",
        "--ae-title",
        "NORTH_PACS",
        "--host",
        "h",
        "--port",
        "104",
    )
    assert duplicate.returncode == 1 and "taken" in duplicate.stderr


def test_bootstrap_demo_is_idempotent(ferry, settings, archive):
    first = ok(ferry("bootstrap-demo"))
    [password] = first.stdout.splitlines()
    second = ok(ferry("bootstrap-demo"))
    assert second.stdout == "" and "demo ready" in second.stderr
    assert len(store.list_users(archive.engine)) == 1
    server = run_server(settings, archive)
    running = next(server)
    try:
        assert sign_in(running.base_url, "admin@ferry.local", password).status_code == 200
    finally:
        server.close()
