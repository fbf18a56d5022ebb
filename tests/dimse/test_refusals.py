"""Every DIMSE service, tried by a node that may do nothing: refused with 0x0124, and audited.

The node is known (it may associate and C-ECHO) but holds neither the right to query nor to
write. Its institution owns a study, so a refusal cannot be mistaken for "nothing found".
"""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import select

from audit.models import AuditEvent
from tests._peers import start_scp
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse
from tests.factories import StudySpec, ct_slice

pytestmark = sqlite_only

NOT_AUTHORIZED = 0x0124
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def _requestor() -> AE:
    ae = AE("NORIGHTS")
    for sop_class in (
        Verification,
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
        StorageCommitmentPushModel,
    ):
        ae.add_requested_context(sop_class)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    return ae


def _study_query(study_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.PatientID = ""
    return query


def _commitment(study: Dataset) -> Dataset:
    reference = Dataset()
    reference.ReferencedSOPClassUID = study.SOPClassUID
    reference.ReferencedSOPInstanceUID = study.SOPInstanceUID
    request = Dataset()
    request.TransactionUID = generate_uid()
    request.ReferencedSOPSequence = [reference]
    return request


def _denials(dimse: Dimse) -> dict[str, int]:
    with dimse.archive.engine.connect() as connection:
        rows = connection.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.detail).where(
                AuditEvent.outcome == "denied"
            )
        ).all()
    counts: dict[str, int] = {}
    for action, actor, detail in rows:
        if actor == "node:NORIGHTS" and json.loads(detail).get("protocol") == "dimse":
            counts[action] = counts.get(action, 0) + 1
    return counts


def test_a_node_without_rights_is_refused_every_service(dimse: Dimse, tmp_path: Path) -> None:
    dimse.add_node("NORIGHTS", can_query=False, can_write=False)
    # pynetdicom makes a C-MOVE handler name its destination before it may refuse: one that
    # answers, so the refusal itself is what the requestor hears.
    destination = AE("DEST")
    destination.add_supported_context(Verification)
    destination.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = start_scp(destination, port)
    dimse.add_node("DEST", move_destination=True, port=port)
    owned = ct_slice(spec=StudySpec())
    dimse.web.settings.spool_dir.mkdir(parents=True, exist_ok=True)
    spooled = dimse.web.settings.spool_dir / "owned.dcm"
    owned.save_as(spooled, enforce_file_format=True)
    assert dimse.archive.store_files([spooled], institution_pk=dimse.institution_pk)[0].stored

    ae = _requestor()
    assoc = ae.associate(
        "127.0.0.1",
        dimse.port,
        ae_title=dimse.ae_title,
        ext_neg=[build_role(CTImageStorage, scu_role=True, scp_role=True)],
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000  # a known node may always echo
        query = _study_query(owned.StudyInstanceUID)
        found = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [status.Status for status, _ in found] == [NOT_AUTHORIZED]
        got = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        assert got[-1][0].Status == NOT_AUTHORIZED
        moved = list(assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove))
        assert moved[-1][0].Status == NOT_AUTHORIZED
        stored = assoc.send_c_store(ct_slice(spec=StudySpec()))
        assert stored.Status == NOT_AUTHORIZED and stored.ErrorComment
        committed, _ = assoc.send_n_action(
            _commitment(owned), 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
        assert committed.Status == NOT_AUTHORIZED
    finally:
        assoc.release()
        server.shutdown()
    assert _denials(dimse) == {"search": 1, "download": 2, "store": 1, "commit": 1}
    assert len(dimse.archive.find_instances(owned.StudyInstanceUID)) == 1  # nothing else came
