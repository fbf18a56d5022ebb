"""pydicom's test corpus through `ferry import`, the folder at once, as a new user would.

Duplicates are refused here (the default): a file whose SOP Instance UID another file already
stored with other bytes is refused, and that is checked to be true.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import RunningServer
from tests.e2e._corpus import (
    AS_STORED,
    CORPUS,
    DICOMDIR_INDEXES,
    LENIENT_READING,
    REFUSED,
    assert_refusal_is_true,
    assert_served,
    corpus_files,
    identity,
    instance_url,
    only_part,
    relative,
)

pytestmark = [LENIENT_READING, pytest.mark.slow]
_KINDS = ("rejected", "refused duplicate", "skipped")


def ferry_import(server: RunningServer) -> dict[str, tuple[str, str]]:
    """`ferry import CORPUS`; what it said of each file it did not store: (kind, reason)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    environment["FERRY_DATA_DIR"] = str(server.settings.data_dir)
    environment["FERRY_DATABASE_URL"] = server.settings.database_url
    command = [sys.executable, "-m", "ferry.cli", "import", str(CORPUS), "--quiet"]
    done = subprocess.run(
        [*command, "--institution", "HOSP"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr  # 1: some files were rejected
    said: dict[str, tuple[str, str]] = {}
    for line in done.stdout.splitlines():
        kind, _, rest = line.partition(": ")
        if kind in _KINDS and rest.startswith(str(CORPUS)):
            label, _, reason = rest.partition(": ")
            said[relative(label)] = (kind, reason)
    return said


def test_every_file_is_stored_and_served_or_refused_for_a_true_reason(
    corpus_server: RunningServer,
) -> None:
    server = corpus_server
    said = ferry_import(server)
    with server.http() as web:
        for path in corpus_files():
            name = relative(path)
            kind, reason = said.get(name, ("stored", ""))
            if name in DICOMDIR_INDEXES:
                assert kind == "stored", (name, reason)  # read as an index, not refused
            elif kind == "refused duplicate":
                other = web.get(
                    instance_url(server, *identity(path)), headers={"Accept": AS_STORED}
                )
                assert other.status_code == 200 and only_part(other) != path.read_bytes(), name
            elif kind == "stored":
                assert name not in REFUSED, f"{name} was stored"
                assert_served(web, server, path)
            else:
                code = int(reason.rsplit("0x", 1)[1].rstrip(")"), 16) if "0x" in reason else None
                assert_refusal_is_true(name, code, reason)
    assert {name for name, (kind, _) in said.items() if kind != "refused duplicate"} == set(REFUSED)
