"""Who may associate and what they may do: unknown AE titles, write rights, the limit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification
from sqlalchemy import func, select

from archive.models import Instance
from dimse.commitment import STORAGE_COMMITMENT_INSTANCE
from dimse.server import Bridge
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse, audit_events, run_dcmtk
from tests.factories import StudySpec, ct_slice

NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x "Refused: Not Authorized"
REJECTED_PERMANENT, REJECTED_TRANSIENT = 0x01, 0x02  # PS3.8 Table 9-21
SOURCE_SERVICE_USER, SOURCE_PRESENTATION = 0x01, 0x03
CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED, LOCAL_LIMIT_EXCEEDED = 0x03, 0x07, 0x02


def stored_count(dimse: Dimse) -> int:
    with dimse.archive.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Instance)).scalar_one())


def associate(port: int, calling: str, called: str = "FERRY") -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae.associate("127.0.0.1", port, ae_title=called)


def echo(port: int, calling: str = "MODALITY", called: str = "FERRY") -> str:
    """What DCMTK's echoscu says (empty when the echo succeeded)."""
    result = run_dcmtk("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port))
    return "" if result.returncode == 0 else result.stdout + result.stderr


def store(assoc: Association, count: int) -> list[Dataset]:
    spec = StudySpec()
    return [
        assoc.send_c_store(ct_slice(spec=replace(spec, instance_number=n + 1)))
        for n in range(count)
    ]


def commitment_request() -> Dataset:
    request = Dataset()
    request.TransactionUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = generate_uid()
    request.ReferencedSOPSequence = [item]
    return request


def rejection(assoc: Association) -> tuple[int, int, int]:
    primitive = assoc.acceptor.primitive
    return primitive.result, primitive.result_source, primitive.diagnostic


@sqlite_only
def test_an_unknown_calling_ae_is_rejected_and_audited(dimse: Dimse) -> None:
    assoc = associate(dimse.port, "STRANGER")
    assert assoc.is_rejected
    assert rejection(assoc) == (
        REJECTED_PERMANENT,
        SOURCE_SERVICE_USER,
        CALLING_AE_NOT_RECOGNISED,
    )
    assert "Calling AE Title Not Recognized" in echo(dimse.port, calling="STRANGER")
    events = audit_events(dimse, "associate")
    assert len(events) == 2
    assert {event.outcome for event in events} == {"denied"}
    assert {json.loads(event.detail)["calling_ae"] for event in events} == {"STRANGER"}
    assert echo(dimse.port) == ""


@sqlite_only
def test_an_unknown_called_ae_is_rejected_and_audited(dimse: Dimse) -> None:
    assoc = associate(dimse.port, "MODALITY", called="NOT_FERRY")
    assert assoc.is_rejected
    assert rejection(assoc) == (REJECTED_PERMANENT, SOURCE_SERVICE_USER, CALLED_AE_NOT_RECOGNISED)
    [event] = audit_events(dimse, "associate")
    assert event.outcome == "denied"
    assert json.loads(event.detail)["called_ae"] == "NOT_FERRY"
    assert echo(dimse.port) == ""


@pytest.fixture
def open_door(dimse: Dimse) -> Iterator[Bridge]:
    """A bridge that lets unknown AE titles associate (to echo)."""
    settings = replace(
        dimse.web.settings, dicom_port=free_port(), dicom_accept_unknown_callers=True
    )
    bridge = Bridge(settings.dimse(), dimse.archive, clock=dimse.clock)
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


@sqlite_only
def test_an_accepted_unknown_caller_may_echo_but_not_store(dimse: Dimse, open_door: Bridge) -> None:
    assert echo(open_door.port, calling="WALKIN") == ""
    assoc = associate(open_door.port, "WALKIN")
    assert assoc.is_established
    try:
        statuses = store(assoc, 2)
        commitment, _ = assoc.send_n_action(
            commitment_request(), 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
    finally:
        assoc.release()
    assert [status.Status for status in statuses] == [NOT_AUTHORIZED] * 2
    assert all(status.ErrorComment for status in statuses)
    assert commitment.Status == NOT_AUTHORIZED
    [commit] = audit_events(dimse, "commit")
    assert commit.outcome == "denied"
    [event] = audit_events(dimse, "store")
    assert event.outcome == "denied"
    assert event.actor == "ae:WALKIN"
    assert stored_count(dimse) == 0
    assert echo(open_door.port) == ""


def test_a_node_without_write_rights_cannot_store(dimse: Dimse) -> None:
    dimse.add_node("VIEWER", can_write=False)
    assoc = associate(dimse.port, "VIEWER")
    assert assoc.is_established
    try:
        statuses = store(assoc, 3)
        echoed = assoc.send_c_echo()
    finally:
        assoc.release()
    assert [status.Status for status in statuses] == [NOT_AUTHORIZED] * 3
    assert echoed.Status == 0x0000
    [event] = audit_events(dimse, "store")  # one refusal per association, not per instance
    assert event.outcome == "denied"
    assert event.actor == "node:VIEWER"
    assert stored_count(dimse) == 0
    assert echo(dimse.port) == ""


@pytest.fixture
def small_bridge(dimse: Dimse) -> Iterator[Bridge]:
    settings = replace(dimse.web.settings, dicom_port=free_port(), dicom_max_associations=6)
    bridge = Bridge(settings.dimse(), dimse.archive, clock=dimse.clock)
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


def test_concurrent_associations_up_to_the_limit_are_served(
    dimse: Dimse, small_bridge: Bridge
) -> None:
    limit = small_bridge.config.dicom_max_associations
    all_open = threading.Barrier(limit + 1)

    def send_while_all_open() -> list[int]:
        assoc = associate(small_bridge.port, "MODALITY")
        assert assoc.is_established
        try:
            all_open.wait(timeout=60)  # every association is up before anyone stores
            all_open.wait(timeout=60)  # and the one over the limit has been tried
            return [int(status.Status) for status in store(assoc, 2)]
        finally:
            assoc.release()

    with ThreadPoolExecutor(limit) as pool:
        futures = [pool.submit(send_while_all_open) for _ in range(limit)]
        all_open.wait(timeout=60)
        over = associate(small_bridge.port, "MODALITY")
        all_open.wait(timeout=60)
        results = [future.result(timeout=120) for future in futures]
    assert over.is_rejected
    assert rejection(over) == (REJECTED_TRANSIENT, SOURCE_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
    assert results == [[0x0000, 0x0000]] * limit
    assert stored_count(dimse) == 2 * limit
    assert echo(small_bridge.port) == ""
