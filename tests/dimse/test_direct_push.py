"""Direct push end to end: HOSP's PACS (storescu) -> FERRY_TO_STMARY -> St Mary's PACS (storescp).

In core hours the study is forwarded to St Mary's PACS; out of hours it waits on St Mary's
worklist. Either way St Mary's people see it over DICOMweb, and the audit trail shows the path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from audit.search import AuditQuery, iter_events
from dimse.forward import FORWARD_STUDY, enqueue_forward, forward_handler
from exchange.models import Transfer, TransferStatus
from exchange.routing import transfer_sweeper
from exchange.transfers import list_transfers
from foundation.jobs import Worker
from policy import store
from policy.store.destinations import create_route
from tests._peers import storescp
from tests.conftest import free_port
from tests.dimse.conftest import Dimse, run_dcmtk
from tests.factories import StudySpec, ct_slice, write_series
from tests.policy._people import add_institution

LONDON = ZoneInfo("Europe/London")
WEDNESDAY_10 = datetime(2026, 6, 10, 10, 0, tzinfo=LONDON)
SUNDAY_03 = datetime(2026, 6, 14, 3, 0, tzinfo=LONDON)


@pytest.fixture
def stmary_pacs(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A DCMTK storescp as St Mary's PACS: its port and the folder it writes to."""
    port, folder = free_port(), tmp_path / "stmary-pacs"
    folder.mkdir()
    with storescp(folder, port, "+xa", ae_title="PACS_STMARY"):
        yield port, folder


def _push(dimse: Dimse, folder: Path) -> Transfer:
    """storescu from HOSP's PACS to the route; the transfer appears when the association ends."""
    sent = run_dcmtk(
        "storescu",
        "-aet",
        "PACS_HOSP",
        "-aec",
        "FERRY_TO_STMARY",
        "+sd",
        "127.0.0.1",
        str(dimse.port),
        str(folder),
    )
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 10  # the bridge notes arrivals just after the release
    while time.monotonic() < deadline:
        collecting = list_transfers(dimse.archive.engine, status="collecting")
        if collecting:
            return collecting[0]
        time.sleep(0.05)
    raise AssertionError("no transfer was started for the pushed study")


def test_direct_push_to_the_day_pacs_and_to_the_worklist_out_of_hours(
    dimse: Dimse, stmary_pacs: tuple[int, Path], tmp_path: Path
) -> None:
    engine = dimse.archive.engine
    pacs_port, received = stmary_pacs
    stmary = add_institution(engine, "STMARY")
    store.update_institution(engine, stmary, timezone="Europe/London")
    store.set_core_hours(engine, stmary, {1, 2, 3, 4, 5}, "08:00", "18:00")
    dimse.add_node("PACS_HOSP")
    pacs = dimse.add_node("PACS_STMARY", stmary, port=pacs_port, can_query=False)
    create_route(engine, "FERRY_TO_STMARY", stmary, destination_node_pk=pacs, quiet_seconds=30)
    store.create_destination_rule(
        engine,
        stmary,
        node_pk=pacs,
        sender_institution_pk=dimse.institution_pk,
        window="core",
        out_of_hours_to_worklist=True,
    )
    reader = dimse.web.token_for("reader@stmary.test", {stmary: "viewer,receiver"})
    worker = Worker(
        dimse.bridge.context.jobs,
        {FORWARD_STUDY: forward_handler(dimse.bridge.context)},
        ticks=[transfer_sweeper(dimse.archive, dimse.clock, enqueue_forward)],
    )

    def visible_to_stmary(study_uid: str) -> int:
        with dimse.web.http() as http:
            answer = http.get(
                f"{dimse.web.dicomweb_url}/studies/{study_uid}/instances",
                headers={"Authorization": f"Bearer {reader}"},
            )
        return len(answer.json()) if answer.status_code == 200 else 0

    # Wednesday 10:00 in London: core hours, so St Mary's PACS gets the study.
    day = StudySpec(patient_id="HOSP-1", accession_number="ACC-DAY")
    write_series(tmp_path / "day", 3, spec=day)
    dimse.clock.now = WEDNESDAY_10
    transfer = _push(dimse, tmp_path / "day")
    assert transfer.instances == 3
    dimse.clock.advance(seconds=20)
    worker.run_ticks()
    assert [t.pk for t in list_transfers(engine, status="collecting")] == [transfer.pk]
    assert visible_to_stmary(day.study_uid) == 0
    dimse.clock.advance(seconds=10)
    worker.run_ticks()
    assert worker.run_until_idle() == 1
    [delivered] = list_transfers(engine, status="delivered")
    assert delivered.destination_node_pk == pacs
    got = {dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in received.iterdir()}
    assert got == {path.stem for path in (tmp_path / "day").iterdir()}
    assert visible_to_stmary(day.study_uid) == 3
    path = [e.action for e in iter_events(engine, AuditQuery(study_uid=day.study_uid))]
    assert path[0] == "store" and {"transfer", "forward"} <= set(path[1:])
    decided = next(iter_events(engine, AuditQuery(study_uid=day.study_uid, action="transfer")))
    assert (decided.actor, decided.outcome) == ("node:PACS_HOSP", "allowed")
    assert decided.patient_id == "HOSP-1"

    # Sunday 03:00: out of hours, so the study waits on St Mary's worklist instead.
    night = StudySpec(patient_id="HOSP-2", accession_number="ACC-NIGHT")
    write_series(tmp_path / "night", 2, spec=night)
    dimse.clock.now = SUNDAY_03
    _push(dimse, tmp_path / "night")
    dimse.clock.advance(seconds=30)
    worker.run_ticks()
    assert worker.run_until_idle() == 0
    [waiting] = list_transfers(engine, status=TransferStatus.ON_WORKLIST)
    assert (waiting.study_instance_uid, waiting.destination_node_pk) == (night.study_uid, None)
    assert len(list(received.iterdir())) == 3
    assert visible_to_stmary(night.study_uid) == 2


def test_a_push_to_a_destination_that_refuses_the_sender_fails_at_once(
    dimse: Dimse, tmp_path: Path
) -> None:
    """No rule lets HOSP send to St Mary's restricted PACS: each C-STORE answers 0x0124."""
    engine = dimse.archive.engine
    stmary = add_institution(engine, "STMARY")
    dimse.add_node("PACS_HOSP")
    pacs = dimse.add_node("PACS_STMARY", stmary, port=free_port(), restricted=True)
    create_route(engine, "FERRY_TO_STMARY", stmary, destination_node_pk=pacs)
    dimse.clock.now = WEDNESDAY_10
    ae = AE("PACS_HOSP")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="FERRY_TO_STMARY")
    assert assoc.is_established
    try:
        spec = StudySpec(patient_id="HOSP-3")
        answers = [
            assoc.send_c_store(ct_slice(spec=replace(spec, instance_number=n))) for n in (1, 2)
        ]
    finally:
        assoc.release()
    assert [int(answer.Status) for answer in answers] == [0x0124, 0x0124]
    assert "no destination rule" in answers[0].ErrorComment
    assert dimse.archive.read_study_access(spec.study_uid) is None  # nothing stored
    assert list_transfers(engine) == []
    refusals = list(iter_events(engine, AuditQuery(action="store", outcome="denied")))
    assert len(refusals) == 1  # one event for the association
    assert refusals[0].actor == "node:PACS_HOSP" and refusals[0].rule == "default-deny"
