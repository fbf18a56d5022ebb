"""`ferry retention ...` as an operator runs it: in-process, and as real processes killed midway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from archive.check import check_archive
from archive.importer import import_paths
from archive.models import Study
from archive.store import Archive
from audit.search import AuditQuery, iter_events
from exchange.grants import grant_study
from ferry.settings import Settings
from tests.factories import StudySpec, write_series
from tests.policy._people import add_institution

ROOT = Path(__file__).resolve().parents[2]


def _studies(archive: Archive, folder: Path, institution_pk: int, count: int, age_days: float,
             patient_id: str = "FERRY-0001") -> list[str]:  # fmt: skip
    """`count` studies of the institution, arrived `age_days` ago."""
    uids = []
    for _ in range(count):
        spec = StudySpec(patient_id=patient_id)
        write_series(folder / spec.study_uid, 1, spec=spec)
        import_paths(archive, [folder / spec.study_uid], progress=False,
                     institution_pk=institution_pk)  # fmt: skip
        uids.append(spec.study_uid)
    arrived = datetime.now(UTC) - timedelta(days=age_days)
    with archive.engine.begin() as connection:
        connection.execute(
            update(Study).where(Study.study_instance_uid.in_(uids)).values(created_at=arrived)  # type: ignore[attr-defined]
        )
    return uids


def _deleted(archive: Archive) -> list[str]:
    return [e.study_uid for e in iter_events(archive.engine, AuditQuery(action="delete"))]


def test_periods_from_the_command_line(ferry_cli: Any, archive: Archive) -> None:
    add_institution(archive.engine, "NORTH")
    shown = ferry_cli("retention", "policy", "show", "--institution", "NORTH")
    assert shown.code == 0, shown.err
    assert ["worklist_days", "15", "default"] in shown.rows()
    done = ferry_cli("retention", "policy", "set", "--institution", "NORTH",
                     "--worklist-days", "30", "--warn-days", "5")  # fmt: skip
    assert done.code == 0, done.err
    assert ["worklist_days", "30", "own"] in done.rows() and [
        "warn_days",
        "5",
        "own",
    ] in done.rows()
    back = ferry_cli(
        "retention", "policy", "set", "--institution", "NORTH", "--default", "worklist"
    )
    assert ["worklist_days", "15", "default"] in back.rows()
    [event, _] = iter_events(archive.engine, AuditQuery(action="retention-policy"))
    assert event.actor == "cli"
    for bad, message in ((["--node-days", "-1"], "between 1 and 3650"),
                         (["--upload-days", "99999"], "between 1 and 3650"),
                         ([], "nothing to change")):  # fmt: skip
        refused = ferry_cli("retention", "policy", "set", "--institution", "NORTH", *bad)
        assert refused.code == 1 and message in refused.err, refused.err
    unknown = ferry_cli("retention", "policy", "show", "--institution", "NOWHERE")
    assert unknown.code == 1 and "NOWHERE" in unknown.err


def test_holds_plan_and_run_from_the_command_line(
    ferry_cli: Any, archive: Archive, tmp_path: Path
) -> None:
    north = add_institution(archive.engine, "NORTH")
    south = add_institution(archive.engine, "SOUTH")
    [kept, gone] = _studies(archive, tmp_path, north, 2, age_days=20)
    [theirs] = _studies(archive, tmp_path, south, 1, age_days=20, patient_id="S-1")
    [soon] = _studies(archive, tmp_path, north, 1, age_days=10, patient_id="N-2")
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    held = ferry_cli("retention", "hold", "--institution", "NORTH", "--study", kept,
                     "--reason", "litigation 17", "--until", until)  # fmt: skip
    assert held.code == 0, held.err
    hold_pk = held.out.strip()
    not_ours = ferry_cli("retention", "hold", "--institution", "NORTH", "--study", theirs,
                         "--reason", "x", "--until", until)  # fmt: skip
    assert not_ours.code == 1 and "holds no study" in not_ours.err
    past = ferry_cli("retention", "hold", "--institution", "NORTH", "--patient", "N-2",
                     "--reason", "x", "--until", "2001-01-01")  # fmt: skip
    assert past.code == 1 and "in the future" in past.err
    huge = ferry_cli("retention", "hold", "--institution", "NORTH", "--patient", "N-2",
                     "--reason", "x" * 5000, "--until", until)  # fmt: skip
    assert huge.code == 1 and "at most 1024" in huge.err
    listed = ferry_cli("retention", "holds", "--institution", "NORTH")
    assert listed.rows()[1][:2] == [hold_pk, str(north)]

    plan = ferry_cli("retention", "plan", "--institution", "NORTH").rows()
    assert ["now", "delete", "study", gone, "last", "holder"] in plan
    assert [r[-3] for r in plan if r[0] == "-"] == [kept]  # held
    assert theirs not in ferry_cli("retention", "plan", "--institution", "NORTH").out
    assert soon in ferry_cli("retention", "plan", "--days", "7").out  # due in 5 days
    assert _deleted(archive) == []  # a plan changes nothing

    ran = ferry_cli("retention", "run")
    assert ran.code == 0 and "2 studies deleted" in ran.out, ran.out
    assert sorted(_deleted(archive)) == sorted([gone, theirs])
    assert ferry_cli("retention", "release", hold_pk).code == 0
    assert ferry_cli("retention", "run").out.startswith("1 studies deleted")
    assert ferry_cli("retention", "holds").rows() == [["pk", "institution", "covers", "until",
                                                        "state", "reason"]]  # fmt: skip
    report = ferry_cli("retention", "audit")
    assert report.code == 0 and "older than 2557 days: 0" in report.out


# --- real processes ---------------------------------------------------------------------------


def _environment(settings: Settings, **values: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    environment |= {
        "FERRY_DATA_DIR": str(settings.data_dir),
        "FERRY_DATABASE_URL": settings.database_url,
        "FERRY_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
        **values,
    }
    return environment


def _sweep(settings: Settings, **values: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ferry.cli", "retention", "run"],
        env=_environment(settings, **values),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(condition: Any, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what}: the sweep ended first ({process.poll()})")
        time.sleep(0.05)


def test_a_sweep_killed_midway_leaves_whole_or_gone_studies_and_the_next_finishes(
    settings: Settings, archive: Archive, tmp_path: Path
) -> None:
    north = add_institution(archive.engine, "NORTH")
    south = add_institution(archive.engine, "SOUTH")
    uids = _studies(archive, tmp_path, north, 5, age_days=20)
    grant_study(archive.engine, uids[0], south, now=datetime.now(UTC) - timedelta(days=20))
    slow = {"FERRY_RETENTION_BATCH_SIZE": "1", "FERRY_RETENTION_PAUSE_SECONDS": "1"}
    sweep = _sweep(settings, **slow)
    _wait_for(lambda: len(_deleted(archive)) >= 2, sweep, "two studies deleted")
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    assert 2 <= len(set(_deleted(archive))) < 5

    rerun = _sweep(settings, FERRY_RETENTION_PAUSE_SECONDS="0")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()  # the dead sweep's lock did not stop it

    assert set(_deleted(archive)) == set(uids)
    for uid in uids:
        assert archive.read_study_access(uid) is None
    report = check_archive(archive, repair=True)  # a blob left by the kill is an orphan only
    assert not report.missing_blobs
    assert list(archive.blobs.iter_keys()) == []


def test_two_sweeps_at_once_delete_each_study_once(
    settings: Settings, archive: Archive, tmp_path: Path
) -> None:
    north = add_institution(archive.engine, "NORTH")
    uids = _studies(archive, tmp_path, north, 4, age_days=20)
    pace = {"FERRY_RETENTION_BATCH_SIZE": "1", "FERRY_RETENTION_PAUSE_SECONDS": "0.3"}
    sweeps = [_sweep(settings, **pace), _sweep(settings, **pace)]
    codes = []
    for sweep in sweeps:
        sweep.communicate(timeout=120)
        codes.append(sweep.returncode)
    assert sorted(_deleted(archive)) == sorted(uids)  # each once: one audit event per study
    assert set(codes) <= {0, 3}
