"""A transfer keeps its study's Patient ID and accession number when retention deletes the
study, so the Transaction Audit Summary still shows and finds the patient's story (on both
databases); a study deleted over DICOMweb leaves the same facts behind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.config import RetentionConfig
from retention.sweeper import Sweeper
from tests.conftest import RunningServer
from tests.portal._oversight_world import World, opened_world

TRANSACTIONS = "/oversight/transactions"


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    yield from opened_world(server, tmp_path)


def _rows(world: World, **criteria: Any) -> list[tuple[str, str, str]]:
    answer = world.search("a-auditor", TRANSACTIONS, {"institution": "A", **criteria})
    assert answer.status_code == 200, answer.text
    return [(i["id"], i["patient_id"], i["accession_number"]) for i in answer.json()["items"]
            if i["kind"] == "transfer"]  # fmt: skip


def test_the_patients_story_is_found_after_retention_deleted_the_study(world: World) -> None:
    t1 = world.ids["t1"]
    before = _rows(world, patient_id="PAT-1")
    assert before == [(t1, "PAT-1", "ACC-PAT-1")]
    later = world.clock[0] + timedelta(days=400)
    report = Sweeper(world.server.archive, RetentionConfig(pause_seconds=0), lambda: later).run()
    assert len(report.studies_deleted) == 2  # ONE and TWO: gone from the index
    shown = world.get("a-user", f"/transfers/{t1}").json()
    assert shown["studies"][0]["in_archive"] is False
    assert _rows(world, patient_id="PAT-1") == before
    assert _rows(world, accession="ACC-PAT-1") == before
    assert _rows(world, patient_id="PAT-1", accession="ACC-PAT-2") == []
    assert (t1, "PAT-1", "ACC-PAT-1") in _rows(world)  # the list names the patient still
    asked = {"institution": "A", "patient_id": "PAT-1", "format": "csv"}
    csv = world.search("a-auditor", TRANSACTIONS, asked)
    assert csv.status_code == 200 and "ACC-PAT-1" in csv.text


def test_a_study_deleted_over_dicomweb_leaves_its_facts_on_the_transfer(world: World) -> None:
    t1 = world.ids["t1"]
    [(_, _, _)] = _rows(world, patient_id="PAT-1")
    uid = world.get("a-user", f"/transfers/{t1}").json()["studies"][0]["study_uid"]
    gone = world.http.delete(f"/dicom-web/studies/{uid}", headers=world.as_("a-admin"))
    assert gone.status_code == 204, gone.text
    assert _rows(world, patient_id="PAT-1") == [(t1, "PAT-1", "ACC-PAT-1")]
