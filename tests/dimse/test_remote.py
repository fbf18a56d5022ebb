"""Ferry as a Q/R SCU: a pynetdicom Q/R SCP with its own store plays the remote PACS."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dimse import statuses
from dimse.callers import get_node
from dimse.context import BridgeContext
from dimse.peers import PeerUnreachable
from dimse.remote import NodeRefused, RemoteFailed, find_on_node, retrieve_from_node
from ferry.settings import replace_settings
from foundation.errors import StudyNotFound
from policy.decision import NodeFacts
from tests._peers import start_scp
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse, audit_events, run_dcmtk
from tests.factories import StudySpec, ct_slice
from tests.policy._people import add_institution

PEER = "REMOTEPACS"
ASKER = "clinician@hosp.test"
SUCCESS, PENDING = statuses.SUCCESS, statuses.PENDING


class RemotePacs:
    """A Q/R SCP (C-FIND, C-MOVE, C-GET; Study and Patient Root) over an in-memory store."""

    STUDY_KEYS = (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
        "StudyDescription",
    )

    def __init__(self, ae_title: str, destinations: dict[str, tuple[str, int]]) -> None:
        self.instances: list[Dataset] = []
        self.destinations = destinations
        self.port = free_port()
        ae = AE(ae_title)
        for sop_class in (
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelMove,
            StudyRootQueryRetrieveInformationModelGet,
            PatientRootQueryRetrieveInformationModelFind,
        ):
            ae.add_supported_context(sop_class)
        for context in StoragePresentationContexts:  # C-GET: the requestor takes the SCP role
            ae.add_supported_context(context.abstract_syntax, scp_role=True, scu_role=False)
        self.server = start_scp(
            ae,
            self.port,
            [
                (evt.EVT_C_FIND, self.on_find),
                (evt.EVT_C_MOVE, self.on_move),
                (evt.EVT_C_GET, self.on_get),
            ],
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_study(self, spec: StudySpec, count: int) -> list[Dataset]:
        added = [ct_slice(spec=replace(spec, instance_number=n + 1)) for n in range(count)]
        self.instances += added
        return added

    def study(self, uid: str) -> list[Dataset]:
        return [ds for ds in self.instances if ds.StudyInstanceUID == uid]

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        studies: dict[str, list[Dataset]] = {}
        for ds in self.instances:
            studies.setdefault(ds.StudyInstanceUID, []).append(ds)
        for instances in studies.values():
            if all(_matches(instances[0], element) for element in query):
                yield PENDING, _answer(query, instances)
        yield SUCCESS, None

    def _sub_operations(self, event: evt.Event) -> list[Dataset]:
        return self.study(str(event.identifier.get("StudyInstanceUID", "")))

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        destination = self.destinations.get(str(event.move_destination).strip())
        if destination is None:
            yield None, None
            return
        instances = self._sub_operations(event)
        contexts = [build_context(uid) for uid in {ds.SOPClassUID for ds in instances}]
        yield (*destination, {"contexts": contexts})
        yield len(instances)
        for ds in instances:
            yield PENDING, ds

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        instances = self._sub_operations(event)
        yield len(instances)
        for ds in instances:
            yield PENDING, ds


def _matches(ds: Dataset, element: Any) -> bool:
    wanted = element.value
    if element.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or wanted in (None, ""):
        return True
    if element.keyword not in ds:
        return False
    text, have = str(wanted), str(ds.get(element.keyword))
    return have.startswith(text[:-1]) if text.endswith("*") else have == text


def _answer(query: Dataset, instances: list[Dataset]) -> Dataset:
    answer = Dataset()
    answer.QueryRetrieveLevel = query.QueryRetrieveLevel
    for element in query:
        if element.keyword in RemotePacs.STUDY_KEYS:
            setattr(answer, element.keyword, instances[0].get(element.keyword, ""))
    if "SOPClassesInStudy" in query:
        answer.SOPClassesInStudy = sorted({ds.SOPClassUID for ds in instances})
    if "NumberOfStudyRelatedInstances" in query:
        answer.NumberOfStudyRelatedInstances = len(instances)
    return answer


@pytest.fixture
def pacs(dimse: Dimse) -> Iterator[RemotePacs]:
    peer = RemotePacs(PEER, {dimse.ae_title: ("127.0.0.1", dimse.port)})
    try:
        yield peer
    finally:
        peer.stop()


def _node(dimse: Dimse, ae_title: str, port: int, **values: Any) -> NodeFacts:
    dimse.add_node(ae_title, port=port, **values)
    node = get_node(dimse.archive.engine, dimse.nodes[ae_title])
    assert node is not None
    return node


def _context(dimse: Dimse, **settings: Any) -> BridgeContext:
    return BridgeContext(
        replace_settings(dimse.web.settings, **settings).dimse(), dimse.archive, dimse.clock
    )


def _qido_studies(dimse: Dimse, study_uid: str, token: str | None = None) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else dimse.web.headers
    with dimse.web.http() as http:
        found = http.get(
            f"{dimse.web.dicomweb_url}/studies",
            params={"StudyInstanceUID": study_uid, "includefield": "NumberOfStudyRelatedInstances"},
            headers=headers,
        )
    assert found.status_code in (200, 204), found.text
    return found.json() if found.status_code == 200 else []


@sqlite_only
def test_find_on_node_returns_the_peers_studies(dimse: Dimse, pacs: RemotePacs) -> None:
    first = StudySpec(patient_id="REM-1", accession_number="R1")
    pacs.add_study(first, 2)
    pacs.add_study(StudySpec(patient_id="REM-2", accession_number="R2"), 1)
    node = _node(dimse, PEER, pacs.port)
    context = _context(dimse)

    query = Dataset()
    query.PatientID = "REM-1"
    query.StudyInstanceUID = ""
    query.AccessionNumber = ""
    found = list(find_on_node(context, node, query, requested_by=ASKER))
    assert [(ds.StudyInstanceUID, ds.AccessionNumber) for ds in found] == [(first.study_uid, "R1")]

    query.PatientID = "REM-*"
    assert {ds.PatientID for ds in find_on_node(context, node, query)} == {"REM-1", "REM-2"}

    patient = Dataset()
    patient.QueryRetrieveLevel = "PATIENT"
    patient.PatientID = "REM-2"
    assert len(list(find_on_node(context, node, patient, model="patient"))) == 1

    searches = audit_events(dimse, "search")
    assert [event.actor for event in searches] == ["ferry"] * 3
    detail = json.loads(searches[0].detail)
    assert detail["on_behalf_of"] == ASKER
    assert detail["node"] == PEER
    assert detail["matches"] == 1
    assert detail["query"]["PatientID"] == "REM-1"


@pytest.mark.parametrize("method", ["move", "get"])
def test_retrieve_stores_the_study_as_the_nodes_institution(
    dimse: Dimse, pacs: RemotePacs, method: str
) -> None:
    spec = StudySpec(patient_id="REM-7", accession_number="R7")
    pacs.add_study(spec, 3)
    node = _node(dimse, PEER, pacs.port, retrieve_method=method)

    result = retrieve_from_node(
        _context(dimse),
        node,
        spec.study_uid,
        institution_pk=dimse.institution_pk,
        requested_by=ASKER,
    )

    assert (result.method, result.completed, result.failed, result.stored) == (method, 3, 0, 3)
    [study] = _qido_studies(dimse, spec.study_uid)
    assert study["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    access = dimse.archive.read_study_access(spec.study_uid)
    assert access is not None and access.institution_pk == node.institution_pk
    other = add_institution(dimse.archive.engine, "OTHER")
    outsider = dimse.web.token_for("outsider@other.test", {other: "viewer,receiver"})
    assert _qido_studies(dimse, spec.study_uid, outsider) == []

    [event] = audit_events(dimse, "retrieve")
    assert (event.actor, event.outcome, event.study_uid) == ("ferry", "allowed", spec.study_uid)
    assert event.patient_id == "REM-7"
    detail = json.loads(event.detail)
    assert (detail["method"], detail["stored"], detail["on_behalf_of"]) == (method, 3, ASKER)


@sqlite_only
def test_refusals_are_domain_errors_and_audited(dimse: Dimse, pacs: RemotePacs) -> None:
    context = _context(dimse)
    no_query = _node(dimse, PEER, pacs.port, can_query=False)
    with pytest.raises(NodeRefused, match="does not allow Ferry to query"):
        find_on_node(context, no_query, Dataset())
    with pytest.raises(NodeRefused, match="does not allow Ferry to retrieve"):
        retrieve_from_node(context, no_query, "1.2.3", institution_pk=None, requested_by=ASKER)
    no_write = _node(dimse, "NOWRITE", pacs.port, can_write=False, retrieve_method="move")
    with pytest.raises(NodeRefused, match="cannot answer a C-MOVE"):
        retrieve_from_node(context, no_write, "1.2.3", institution_pk=None, requested_by=ASKER)
    refused = audit_events(dimse, "search") + audit_events(dimse, "retrieve")
    assert [event.outcome for event in refused] == ["denied"] * 3


@sqlite_only
def test_failures_are_clear_and_the_bridge_still_answers(dimse: Dimse, pacs: RemotePacs) -> None:
    context = _context(dimse, dicom_acse_timeout=1, dicom_dimse_timeout=1, dicom_network_timeout=1)
    missing = StudySpec().study_uid
    for method in ("move", "get"):
        node = _node(dimse, f"R-{method}", pacs.port, retrieve_method=method)
        with pytest.raises(StudyNotFound, match=missing):
            retrieve_from_node(context, node, missing, institution_pk=None, requested_by=ASKER)

    pacs.destinations.clear()  # the remote no longer knows where FERRY is
    spec = StudySpec()
    pacs.add_study(spec, 1)
    mover = _node(dimse, PEER, pacs.port, retrieve_method="move")
    with pytest.raises(RemoteFailed, match="0xA801: the node does not know Ferry's AE title"):
        retrieve_from_node(context, mover, spec.study_uid, institution_pk=None, requested_by=ASKER)

    nobody = _node(dimse, "NOBODY", free_port())
    with pytest.raises(PeerUnreachable, match="NOBODY"):
        list(find_on_node(context, nobody, Dataset()))

    with silent_peer() as port:
        silent = _node(dimse, "SILENT", port)
        with pytest.raises(PeerUnreachable, match="SILENT"):
            retrieve_from_node(
                context, silent, spec.study_uid, institution_pk=None, requested_by=""
            )

    outcomes = [
        event.outcome for event in audit_events(dimse, "retrieve") + audit_events(dimse, "search")
    ]
    assert outcomes == ["failed"] * 5
    echo = run_dcmtk(
        "echoscu", "-aet", "MODALITY", "-aec", dimse.ae_title, "127.0.0.1", str(dimse.port)
    )
    assert echo.returncode == 0, echo.stderr


@contextmanager
def silent_peer() -> Iterator[int]:
    """A socket that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            with suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            connection.close()
