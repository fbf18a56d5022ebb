"""`ferry audit verify|head|search|stats|export`, run as an operator would, in a subprocess."""

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


def ferry(settings, *arguments: str) -> subprocess.CompletedProcess[str]:
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
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_verify_reports_an_intact_chain_and_then_the_broken_row(engine, settings):
    seed(engine, 5)
    result = ferry(settings, "verify")
    assert result.returncode == 0, result.stderr
    assert "audit chain intact: 5 events" in result.stdout

    tamper(engine, "UPDATE audit_event SET patient_id = 'SOMEONE-ELSE' WHERE pk = 3")
    result = ferry(settings, "verify")
    assert result.returncode == 1
    assert "AUDIT CHAIN BROKEN" in result.stdout
    assert "first at pk 3" in result.stdout


def test_head_prints_an_anchor_that_verify_checks(engine, settings):
    seed(engine, 4)
    result = ferry(settings, "head")
    assert result.returncode == 0
    anchor = result.stdout.strip()
    assert anchor == str(chain_head(engine))
    assert ferry(settings, "verify", "--anchor", anchor).returncode == 0

    tamper(engine, "DELETE FROM audit_event WHERE pk = 4")
    tamper(
        engine,
        "UPDATE audit_chain_head SET last_pk = 3, "
        "last_hash = (SELECT hash FROM audit_event WHERE pk = 3)",
    )
    assert ferry(settings, "verify").returncode == 0  # consistent in itself ...
    result = ferry(settings, "verify", "--anchor", anchor)
    assert result.returncode == 1  # ... but not with what the operator kept
    assert "anchor-missing" in result.stdout


def test_search_filters_and_prints_json(engine, settings):
    seed(engine, 8)
    result = ferry(settings, "search", "--patient-id", "PAT1", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [event["pk"] for event in found["events"]] == [5, 1]
    assert found["events"][0]["accession_number"] == "ACC5"
    assert found["next_before_pk"] is None

    result = ferry(
        settings, "search", "--from", "2025-03-01T09:33:00Z", "--to", "2025-03-01T09:35Z"
    )
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["4", "3"]

    result = ferry(settings, "search", "--accession", "ACC2", "--study", "nope", "--json")
    assert json.loads(result.stdout)["events"] == []


def test_reading_the_trail_is_itself_audited(engine, settings):
    seed(engine, 2)
    ferry(settings, "search", "--patient-id", "PAT1")
    result = ferry(settings, "search", "--action", "audit", "--json")
    (used,) = json.loads(result.stdout)["events"]
    assert used["patient_id"] == "PAT1"
    assert used["actor_kind"] == "cli"
    assert used["detail"] == {"command": "audit search", "criteria": {"patient_id": "PAT1"}}
    assert ferry(settings, "verify").returncode == 0


def test_stats_counts_per_day(engine, settings):
    seed(engine, 3)
    result = ferry(settings, "stats", "--to", "2025-03-01", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"day": "2025-03-01", "action": "read-pixels", "outcome": "allowed", "count": 3}
    ]


def test_export_a_date_range_as_atna_and_jsonl(engine, settings, tmp_path):
    seed(engine, 3)
    atna = tmp_path / "audit.log"
    result = ferry(settings, "export", "--from", "2025-03-01", "--to", "2025-03-01", str(atna))
    assert result.returncode == 0, result.stderr
    assert "exported 3 events" in result.stdout
    for line in atna.read_bytes().splitlines():
        assert line.startswith(b"<85>1 2025-03-01T09:3")
        root = ElementTree.fromstring(line.split(UTF8_BOM, 1)[1])
        assert root.find("EventIdentification") is not None

    result = ferry(
        settings, "export", "--format", "jsonl", "--from", "2025-03-02", "--to", "2025-12-31", "-"
    )
    assert (result.returncode, result.stdout) == (0, "")
    result = ferry(settings, "export", "--format", "jsonl", "-")
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
def test_bad_arguments_are_refused_with_a_reason(settings, arguments, message):
    result = ferry(settings, *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_export_file_is_an_error_not_a_traceback(engine, settings, tmp_path):
    result = ferry(settings, "export", str(tmp_path / "missing" / "audit.log"))
    assert result.returncode == 1
    assert "cannot write" in result.stderr
    assert "Traceback" not in result.stderr
