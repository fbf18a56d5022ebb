"""Storage Commitment Push Model (PS3.4 Annex J) with a pynetdicom peer as the requestor."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification
from sqlalchemy import select

from audit.models import AuditEvent
from dimse._reactor import ReactorGate
from dimse.commitment import STORAGE_COMMITMENT_INSTANCE
from tests._peers import start_scp
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse
from tests.factories import StudySpec, write_series
from tests.policy._people import add_institution

NO_SUCH_OBJECT_INSTANCE = 0x0112  # PS3.3 C.14.1.1 Failure Reason
CLASS_INSTANCE_CONFLICT = 0x0119
NO_SUCH_ACTION = 0x0123  # PS3.7 C.4
INVALID_ARGUMENT_VALUE = 0x0115
REPORT_WAIT = 60  # seconds; a bound on waiting, not a timing assertion

Reports = queue.Queue[tuple[int, Dataset]]


def store_study(dimse: Dimse, folder: Path, institution_pk: int, count: int = 2) -> list[str]:
    """Stores a CT series straight into the archive for an institution; its SOP Instance UIDs."""
    outcomes = dimse.archive.store_files(
        write_series(folder, count, spec=StudySpec()), institution_pk=institution_pk
    )
    assert all(outcome.stored for outcome in outcomes)
    return [outcome.sop_instance_uid for outcome in outcomes]


def request(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction_uid
    info.ReferencedSOPSequence = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        info.ReferencedSOPSequence.append(item)
    return info


def on_report(reports: Reports) -> Any:
    def handler(event: evt.Event) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information))
        return 0x0000, None

    return handler


def requestor() -> AE:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(Verification)
    return ae


def commit_events(dimse: Dimse, count: int = 1) -> list[dict[str, Any]]:
    """The 'commit' audit events, once `count` are there (audited after the report is sent)."""
    deadline = time.monotonic() + REPORT_WAIT
    while True:
        with dimse.archive.engine.connect() as connection:
            rows = connection.execute(
                select(AuditEvent).where(AuditEvent.action == "commit").order_by(AuditEvent.pk)
            ).all()
        if len(rows) >= count or time.monotonic() > deadline:
            return [dict(row._mapping) | {"detail": json.loads(row.detail)} for row in rows]
        time.sleep(0.05)


def uids(sequence: Any) -> set[tuple[str, str]]:
    return {(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) for item in sequence}


@pytest.fixture
def pacs_scp(dimse: Dimse) -> Iterator[Reports]:
    """The requestor's own SCP, where a report arrives after the requestor released."""
    reports: Reports = queue.Queue()
    ae = AE(ae_title="PACS")
    # Ferry proposes the SCP role (it sends the N-EVENT-REPORT); this node agrees.
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    port = free_port()
    server = start_scp(ae, port, [(evt.EVT_N_EVENT_REPORT, on_report(reports))])
    dimse.add_node("PACS", port=port)
    try:
        yield reports
    finally:
        server.shutdown()


def test_report_on_the_same_association_names_what_is_held_and_visible(
    dimse: Dimse, tmp_path: Path
) -> None:
    own = store_study(dimse, tmp_path / "own", dimse.institution_pk)
    foreign = store_study(dimse, tmp_path / "other", add_institution(dimse.archive.engine, "OTH"))
    dimse.add_node("PACS")
    transaction = generate_uid()
    references = [
        (CTImageStorage, own[0]),
        (MRImageStorage, own[1]),  # held as CT: a class/instance conflict
        (CTImageStorage, foreign[0]),  # another institution's: must look absent
        (CTImageStorage, generate_uid()),  # never received
    ]
    reports: Reports = queue.Queue()
    assoc = requestor().associate(
        "127.0.0.1",
        dimse.port,
        ae_title=dimse.ae_title,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report(reports))],
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            request(transaction, references),
            1,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
        )
        assert status.Status == 0x0000
        event_type, info = reports.get(timeout=REPORT_WAIT)
        assert assoc.send_c_echo().Status == 0x0000  # the bridge still serves this association
    finally:
        assoc.release()

    assert event_type == 2  # failures exist
    assert info.TransactionUID == transaction
    assert info.RetrieveAETitle == dimse.ae_title
    assert uids(info.ReferencedSOPSequence) == {(CTImageStorage, own[0])}
    failed = {item.ReferencedSOPInstanceUID: item.FailureReason for item in info.FailedSOPSequence}
    assert failed == {
        own[1]: CLASS_INSTANCE_CONFLICT,
        foreign[0]: NO_SUCH_OBJECT_INSTANCE,
        references[3][1]: NO_SUCH_OBJECT_INSTANCE,
    }
    [event] = commit_events(dimse)
    assert event["outcome"] == "allowed"
    assert event["actor"] == "node:PACS"
    assert event["detail"]["transaction_uid"] == transaction
    assert event["detail"]["report"] == "same association"
    assert event["detail"]["committed"] == 1
    assert event["detail"]["failed"] == {"0112": 2, "0119": 1}
    assert foreign[0] not in json.dumps(event, default=str)


def test_reports_on_one_kept_association_each_reach_it_through_the_reactor_gate(
    dimse: Dimse, tmp_path: Path
) -> None:
    """A requestor that keeps its association asks again and again: each report comes on it,
    sent from Ferry's report thread while the association's reactor is held at the gate that
    keeps it from taking the requestor's answer (dimse/_reactor.py)."""
    own = store_study(dimse, tmp_path / "own", dimse.institution_pk, count=1)
    dimse.add_node("PACS")
    reports: Reports = queue.Queue()
    handlers = [(evt.EVT_N_EVENT_REPORT, on_report(reports))]
    assoc = requestor().associate(
        "127.0.0.1", dimse.port, ae_title=dimse.ae_title, evt_handlers=handlers
    )
    assert assoc.is_established
    transactions = [generate_uid() for _ in range(3)]
    try:
        for transaction in transactions:
            information = request(transaction, [(CTImageStorage, own[0])])
            status, _ = assoc.send_n_action(information, 1, StorageCommitmentPushModel,
                                            STORAGE_COMMITMENT_INSTANCE)  # fmt: skip
            assert status.Status == 0x0000
            event_type, info = reports.get(timeout=REPORT_WAIT)
            assert (event_type, info.TransactionUID) == (1, transaction)
        [served] = [a for server in dimse.bridge.servers for a in server.active_associations]
        assert isinstance(served._reactor_checkpoint, ReactorGate)
    finally:
        assoc.release()
    events = commit_events(dimse, len(transactions))
    assert [e["detail"]["transaction_uid"] for e in events] == transactions
    assert {e["detail"]["report"] for e in events} == {"same association"}


def test_a_requestor_that_asks_again_before_it_answers_the_report_gets_both_reports(
    dimse: Dimse, tmp_path: Path
) -> None:
    """With the default operations window a requestor performing Ferry's N-EVENT-REPORT may
    invoke its next N-ACTION before it answers the report: Ferry must not take that request for
    the report's response (dimse/_reactor.py), but answer it once the response came."""
    own = store_study(dimse, tmp_path / "own", dimse.institution_pk, count=1)
    dimse.add_node("PACS")
    first, second = generate_uid(), generate_uid()
    reports: Reports = queue.Queue()
    asking, second_sent = threading.Event(), threading.Event()
    second_status: list[Dataset] = []

    def ask_second() -> None:
        information = request(second, [(CTImageStorage, own[0])])
        status, _ = assoc.send_n_action(information, 1, StorageCommitmentPushModel,
                                        STORAGE_COMMITMENT_INSTANCE)  # fmt: skip
        second_status.append(status)

    asker = threading.Thread(target=ask_second, daemon=True)

    def on_sent(event: evt.Event) -> None:  # on the wire: the second N-ACTION, once asking
        if asking.is_set() and isinstance(event.pdu, P_DATA_TF):  # type: ignore[attr-defined]
            second_sent.set()

    def on_event_report(event: evt.Event) -> tuple[int, None]:
        information = event.event_information
        if information.TransactionUID == first:  # the next request goes out before this answer
            asking.set()
            asker.start()
            assert second_sent.wait(REPORT_WAIT)
        reports.put((event.event_type, information))
        return 0x0000, None

    handlers = [(evt.EVT_N_EVENT_REPORT, on_event_report), (evt.EVT_PDU_SENT, on_sent)]
    assoc = requestor().associate(
        "127.0.0.1", dimse.port, ae_title=dimse.ae_title, evt_handlers=handlers
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(request(first, [(CTImageStorage, own[0])]), 1,
                                        StorageCommitmentPushModel,
                                        STORAGE_COMMITMENT_INSTANCE)  # fmt: skip
        assert status.Status == 0x0000
        got = [reports.get(timeout=REPORT_WAIT) for _ in range(2)]
        assert [(event_type, info.TransactionUID) for event_type, info in got] == [
            (1, first),
            (1, second),
        ]
        asker.join(REPORT_WAIT)  # its response came before the second report; its status now
        assert [status.Status for status in second_status] == [0x0000]
    finally:
        assoc.release()
    events = commit_events(dimse, 2)
    assert [e["detail"]["transaction_uid"] for e in events] == [first, second]
    assert {e["detail"]["report"] for e in events} == {"same association"}


@sqlite_only
def test_report_on_a_new_association_after_the_requestor_released(
    dimse: Dimse, tmp_path: Path, pacs_scp: Reports
) -> None:
    own = store_study(dimse, tmp_path / "own", dimse.institution_pk, count=3)
    transaction = generate_uid()
    assoc = requestor().associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            request(transaction, [(CTImageStorage, uid) for uid in own]),
            1,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
        )
    finally:
        assoc.release()
    assert status.Status == 0x0000

    event_type, info = pacs_scp.get(timeout=REPORT_WAIT)
    assert event_type == 1  # all committed
    assert info.TransactionUID == transaction
    assert uids(info.ReferencedSOPSequence) == {(CTImageStorage, uid) for uid in own}
    assert "FailedSOPSequence" not in info
    [event] = commit_events(dimse)
    assert event["outcome"] == "allowed"
    assert event["detail"]["report"] == "new association"
    assert event["detail"]["committed"] == 3


@sqlite_only
@pytest.mark.parametrize(
    ("action_type", "information", "status"),
    [
        (2, request("1.2.3", [(CTImageStorage, "1.2.3.4")]), NO_SUCH_ACTION),
        (1, request("", [(CTImageStorage, "1.2.3.4")]), INVALID_ARGUMENT_VALUE),
        (1, request("1.2.3", []), INVALID_ARGUMENT_VALUE),
    ],
    ids=["unknown-action", "no-transaction", "no-references"],
)
def test_a_request_that_cannot_be_acted_on_is_refused_and_audited(
    dimse: Dimse, action_type: int, information: Dataset, status: int
) -> None:
    dimse.add_node("PACS")
    reports: Reports = queue.Queue()
    assoc = requestor().associate(
        "127.0.0.1",
        dimse.port,
        ae_title=dimse.ae_title,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report(reports))],
    )
    assert assoc.is_established
    try:
        answer, _ = assoc.send_n_action(
            information, action_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
        echo = assoc.send_c_echo()
    finally:
        assoc.release()
    assert answer.Status == status
    assert answer.ErrorComment
    assert echo.Status == 0x0000
    assert reports.empty()
    [event] = commit_events(dimse)
    assert event["outcome"] == "failed"
    assert event["detail"]["status"] == f"{status:04X}"
