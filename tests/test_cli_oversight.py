"""`ferry oversight transactions|audit|statistics` against a world with a history (a real
database)."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import pytest

from audit.trail import AuditRecord, record
from tests.conftest import RunningServer
from tests.portal._oversight_world import build_world


def test_transactions_and_statistics_from_the_command_line(
    server: RunningServer, tmp_path: Path, ferry_cli: Any
) -> None:
    world = build_world(server, tmp_path)
    world.http.close()
    shown = ferry_cli("oversight", "transactions", "--institution", "A")
    assert shown.code == 0, shown.err
    assert world.ids["t1"] in shown.out and "(5 of 5;" in shown.out
    assert "A -> B" in shown.out and "patient PAT-1" in shown.out
    sent = tmp_path / "sent.csv"
    written = ferry_cli("oversight", "transactions", "--institution", "A", "--direction", "sent",
                        "--csv", str(sent))  # fmt: skip
    assert written.code == 0, written.err
    rows = list(csv.DictReader(io.StringIO(sent.read_text())))
    assert [row["id"] for row in rows] == [world.ids[k] for k in ("failed", "t2", "t1")]
    assert not (tmp_path / "sent.csv.partial").exists()
    piped = ferry_cli("oversight", "transactions", "--institution", "A", "--kind", "request",
                      "--csv", "-")  # fmt: skip
    assert [row["id"] for row in csv.DictReader(io.StringIO(piped.out))] == [world.ids["request"]]
    weekly = ferry_cli("oversight", "statistics", "--institution", "A", "--interval", "week")
    assert weekly.code == 0 and "2026-06-08  sent" in weekly.out
    assert "request-answer" in weekly.out and "failed" in weekly.out
    numbers = tmp_path / "stats.csv"
    assert (
        ferry_cli("oversight", "statistics", "--institution", "A", "--csv", str(numbers)).code == 0
    )
    assert {row["section"] for row in csv.DictReader(numbers.open())} == {
        "volume", "turnaround", "failure",
    }  # fmt: skip
    used = [e for e in world.audit(action="audit") if e.actor_kind == "cli"]
    assert len(used) == 5 and {e.institution_pk for e in used} == {world.pks["A"]}


def test_the_command_line_refuses_bad_input(
    server: RunningServer, tmp_path: Path, ferry_cli: Any
) -> None:
    unknown = ferry_cli("oversight", "transactions", "--institution", "NOWHERE")
    assert unknown.code == 1 and "no institution 'NOWHERE'" in unknown.err
    for bad in (["--from", "2026-13-01"], ["--limit", "100000"], ["--direction", "up"]):
        ran = ferry_cli("oversight", "transactions", "--institution", "HOSP", *bad)
        assert ran.code == 2, bad
    backwards = ferry_cli("oversight", "statistics", "--institution", "HOSP",
                          "--from", "2026-06-12", "--to", "2026-06-01")  # fmt: skip
    assert backwards.code == 1 and "starts after it ends" in backwards.err
    unwritable = ferry_cli("oversight", "statistics", "--institution", "HOSP", "--csv",
                           str(tmp_path / "missing" / "x.csv"))  # fmt: skip
    assert unwritable.code == 1 and "cannot write" in unwritable.err


def test_the_scoped_audit_trail_from_the_command_line(
    server: RunningServer, tmp_path: Path, ferry_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = build_world(server, tmp_path)
    world.http.close()
    record(server.archive.engine, AuditRecord("administer", "allowed", "user:c-admin@ferry.test",
                                              "user", institution_pk=world.pks["C"],
                                              patient_id="PAT-C"))  # fmt: skip
    shown = ferry_cli("oversight", "audit", "--institution", "A", "--patient-id", "PAT-1",
                      "--limit", "2")  # fmt: skip
    assert shown.code == 0, shown.err
    assert len([line for line in shown.out.splitlines() if "PAT-1" in line]) == 2
    assert "(more: --before-pk" in shown.out
    exported = tmp_path / "trail.csv"
    written = ferry_cli("oversight", "audit", "--institution", "A", "--transaction",
                        world.ids["t1"], "--csv", str(exported))  # fmt: skip
    assert written.code == 0, written.err
    rows = list(csv.DictReader(exported.open()))
    assert rows and {row["transaction"] for row in rows} == {world.ids["t1"]}
    assert [int(r["pk"]) for r in rows] == sorted(int(r["pk"]) for r in rows)  # chain order
    everything = ferry_cli("oversight", "audit", "--institution", "A", "--csv", "-")
    assert "PAT-C" not in everything.out  # C's business stays C's
    assert "PAT-C" in ferry_cli("oversight", "audit", "--institution", "C", "--csv", "-").out
    used = [e for e in world.audit(action="audit") if e.actor_kind == "cli"]
    assert [e.reason for e in used[:3]] == ["audit trail of A"] * 3
    assert used[0].patient_id == "PAT-1" and used[1].transaction == world.ids["t1"]
    bad = ferry_cli("oversight", "audit", "--institution", "A", "--outcome", "maybe")
    assert bad.code == 2
    backwards = ferry_cli("oversight", "audit", "--institution", "A",
                          "--from", "2026-06-12", "--to", "2026-06-01")  # fmt: skip
    assert backwards.code == 1 and "starts after it ends" in backwards.err
    with monkeypatch.context() as typed:  # `--patient-id -`: read, not shown in `ps`
        typed.setattr(sys, "stdin", io.StringIO("PAT-1\n"))
        read = ferry_cli("oversight", "transactions", "--institution", "A", "--patient-id", "-")
    assert read.code == 0, read.err
    listed = ferry_cli("oversight", "transactions", "--institution", "A", "--patient-id", "PAT-1")
    assert read.out == listed.out and "PAT-1" in listed.out
