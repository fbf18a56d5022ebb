"""`ferry audit verify|head|search|stats|export`, run as an operator would.

The commands run through `ferry`'s entry point in this process (`ferry_cli`, tests/conftest.py:
an operator's environment, output and exit status, without a second of interpreter start-up a
call); the installed `ferry` script itself runs in a subprocess for the chain check's exit
statuses and for an error that must not be a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from audit import chain_head
from audit.export import UTF8_BOM
from tests.audit._records import seed, tamper


def ferry_process(settings, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`ferry audit ARGUMENTS...` as a separate process, the installed script."""
    script = Path(sys.executable).parent / "ferry"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ferry.cli"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    environment.update(
        FERRY_DATA_DIR=str(settings.data_dir), FERRY_DATABASE_URL=settings.database_url
    )
    return subprocess.run(
        [*command, "audit", *arguments],
        env=environment,
        cwd=settings.data_dir.parent,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def ferry(ferry_cli):
    """`ferry audit ARGUMENTS...` through the entry point in this process."""

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return ferry_cli("audit", *arguments).completed(("audit", *arguments))

    return run


def test_verify_reports_an_intact_chain_and_then_the_broken_row(engine, settings):
    seed(engine, 5)
    result = ferry_process(settings, "verify")
    assert result.returncode == 0, result.stderr
    assert "audit chain intact: 5 events" in result.stdout

    tamper(engine, "UPDATE audit_event SET patient_id = 'SOMEONE-ELSE' WHERE pk = 3")
    result = ferry_process(settings, "verify")
    assert result.returncode == 1
    assert "AUDIT CHAIN BROKEN" in result.stdout
    assert "first at pk 3" in result.stdout


def test_head_prints_an_anchor_that_verify_checks(engine, ferry):
    seed(engine, 4)
    result = ferry("head")
    assert result.returncode == 0
    anchor = result.stdout.strip()
    assert anchor == str(chain_head(engine))
    assert ferry("verify", "--anchor", anchor).returncode == 0

    tamper(engine, "DELETE FROM audit_event WHERE pk = 4")
    tamper(
        engine,
        "UPDATE audit_chain_head SET last_pk = 3, "
        "last_hash = (SELECT hash FROM audit_event WHERE pk = 3)",
    )
    assert ferry("verify").returncode == 0  # consistent in itself ...
    result = ferry("verify", "--anchor", anchor)
    assert result.returncode == 1  # ... but not with what the operator kept
    assert "anchor-missing" in result.stdout


def test_search_filters_and_prints_json(engine, ferry):
    seed(engine, 8)
    result = ferry("search", "--patient-id", "PAT1", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [event["pk"] for event in found["events"]] == [5, 1]
    assert found["events"][0]["accession_number"] == "ACC5"
    assert found["next_before_pk"] is None

    result = ferry("search", "--from", "2025-03-01T09:33:00Z", "--to", "2025-03-01T09:35Z")
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["4", "3"]

    result = ferry("search", "--accession", "ACC2", "--study", "nope", "--json")
    assert json.loads(result.stdout)["events"] == []


def test_a_patient_id_read_from_standard_input_is_kept_out_of_the_process_list(engine, settings):
    seed(engine, 8)
    result = ferry_process(settings, "search", "--patient-id", "-", "--json", stdin="PAT1\n")
    assert result.returncode == 0, result.stderr
    assert [event["pk"] for event in json.loads(result.stdout)["events"]] == [5, 1]
    refused = ferry_process(settings, "search", "--patient-id", "-", stdin="")
    assert refused.returncode == 2
    assert "no patient ID on standard input" in refused.stderr


def test_reading_the_trail_is_itself_audited(engine, ferry):
    seed(engine, 2)
    ferry("search", "--patient-id", "PAT1")
    result = ferry("search", "--action", "audit", "--json")
    (used,) = json.loads(result.stdout)["events"]
    assert used["patient_id"] == "PAT1"
    assert used["actor_kind"] == "cli"
    assert used["detail"] == {"command": "audit search", "criteria": {"patient_id": "PAT1"}}
    assert ferry("verify").returncode == 0


def test_stats_counts_per_day(engine, ferry):
    seed(engine, 3)
    result = ferry("stats", "--to", "2025-03-01", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"day": "2025-03-01", "action": "read-pixels", "outcome": "allowed", "count": 3}
    ]


def test_export_a_date_range_as_atna_and_jsonl(engine, tmp_path, ferry):
    seed(engine, 3)
    atna = tmp_path / "audit.log"
    result = ferry("export", "--from", "2025-03-01", "--to", "2025-03-01", str(atna))
    assert result.returncode == 0, result.stderr
    assert "exported 3 events" in result.stdout
    for line in atna.read_bytes().splitlines():
        assert line.startswith(b"<85>1 2025-03-01T09:3")
        root = ElementTree.fromstring(line.split(UTF8_BOM, 1)[1])
        assert root.find("EventIdentification") is not None

    result = ferry("export", "--format", "jsonl", "--from", "2025-03-02", "--to", "2025-12-31", "-")
    assert (result.returncode, result.stdout) == (0, "")
    result = ferry("export", "--format", "jsonl", "-")
    assert [json.loads(line)["pk"] for line in result.stdout.splitlines()] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["search", "--from", "yesterday"], "expected YYYY-MM-DD or an ISO time"),
        (["search", "--to", "2025-02-30"], "expected YYYY-MM-DD"),
        (["search", "--limit", "0"], "expected 1 to 1000"),
        (["search", "--outcome", "maybe"], "invalid choice"),
        (["export", "--format", "csv", "out"], "invalid choice"),
        (["export"], "required: file"),
        (["verify", "--anchor", "3:nothex"], "expected an anchor"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(arguments, message, ferry):
    result = ferry(*arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_export_file_is_an_error_not_a_traceback(engine, settings, tmp_path):
    result = ferry_process(settings, "export", str(tmp_path / "missing" / "audit.log"))
    assert result.returncode == 1
    assert "cannot write" in result.stderr
    assert "Traceback" not in result.stderr
