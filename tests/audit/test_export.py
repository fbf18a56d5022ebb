"""Export: DICOM audit messages (PS3.15 A.5) in RFC 5424 syslog lines, and re-checkable JSONL."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import datetime
from xml.etree import ElementTree

import pytest

from audit import Outcome, record, record_many
from audit.export import (
    UTF8_BOM,
    AuditSource,
    audit_message_xml,
    export_events,
    export_to_file,
    frame_octet_counted,
    syslog_message,
)
from audit.models import GENESIS_HASH
from audit.search import AuditEntry, AuditQuery, search_events
from audit.trail import event_hash
from tests.audit._records import T0, sample

SOURCE = AuditSource("ferry.example.org", "FERRY", "ferry-1.example.org")
SYSLOG_HEADER = re.compile(  # PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD BOM
    rb"^<85>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) ferry (\d+) "
    rb"IHE\+RFC-3881 - \xef\xbb\xbf"
)


def only_entry(engine) -> AuditEntry:
    (entry,) = search_events(engine, AuditQuery()).entries
    return entry


def message(entry: AuditEntry) -> ElementTree.Element:
    return ElementTree.fromstring(audit_message_xml(entry, SOURCE))


def code(element: ElementTree.Element | None) -> tuple[str | None, ...]:
    assert element is not None
    return element.get("csd-code"), element.get("codeSystemName"), element.get("originalText")


def test_a_retrieve_becomes_a_complete_audit_message(engine):
    record(engine, sample(3, action="retrieve"))
    root = message(only_entry(engine))
    assert root.tag == "AuditMessage"

    event = root.find("EventIdentification")
    assert event is not None
    assert event.attrib == {
        "EventActionCode": "R",
        "EventDateTime": "2025-03-01T09:33:00.000000Z",
        "EventOutcomeIndicator": "0",
    }
    assert code(event.find("EventID")) == ("110104", "DCM", "DICOM Instances Transferred")

    requester, ferry = root.findall("ActiveParticipant")
    assert requester.get("UserID") == "user:user0@example.org"
    assert requester.get("UserIsRequestor") == "true"
    assert requester.get("UserTypeCode") == "1"
    assert requester.get("NetworkAccessPointID") == "192.0.2.10"
    assert requester.get("NetworkAccessPointTypeCode") == "2"
    assert code(requester.find("RoleIDCode")) == ("110152", "DCM", "Destination")
    assert (ferry.get("UserID"), ferry.get("UserIsRequestor")) == ("FERRY", "false")
    assert code(ferry.find("RoleIDCode")) == ("110153", "DCM", "Source")
    assert ferry.get("NetworkAccessPointTypeCode") == "1"

    audit_source = root.find("AuditSourceIdentification")
    assert audit_source is not None and audit_source.get("AuditSourceID") == "ferry.example.org"
    assert audit_source.find("AuditSourceTypeCode") is not None

    patient, study = root.findall("ParticipantObjectIdentification")
    assert patient.attrib == {
        "ParticipantObjectID": "PAT3",
        "ParticipantObjectTypeCode": "1",
        "ParticipantObjectTypeCodeRole": "1",
    }
    assert code(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")
    assert study.get("ParticipantObjectID") == "1.2.826.0.1.3680043.8.498.3"
    assert (study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == (
        "2",
        "3",
    )
    assert code(study.find("ParticipantObjectIDTypeCode")) == (
        "110180",
        "DCM",
        "Study Instance UID",
    )
    accession = study.find("Accession")
    assert accession is not None and accession.get("Number") == "ACC3"
    details = {
        d.get("type"): base64.b64decode(d.get("value") or "").decode()
        for d in study.findall("ParticipantObjectDetail")
    }
    assert details["FerryTransaction"] == "req-3"
    assert details["FerryAuditEvent"].startswith("1:")


@pytest.mark.parametrize(
    ("action", "event_id", "action_code"),
    [
        ("search", "110112", "E"),
        ("read-metadata", "110103", "R"),
        ("read-pixels", "110103", "R"),
        ("download", "110106", "R"),
        ("store", "110104", "C"),
        ("delete", "110105", "D"),
        ("audit", "110101", "R"),
        ("login", "110114", "E"),
        ("something-new", "110100", "E"),
    ],
)
def test_actions_map_to_dicom_event_ids(engine, action, event_id, action_code):
    record(engine, sample(1, action=action))
    event = message(only_entry(engine)).find("EventIdentification")
    assert event is not None and event.get("EventActionCode") == action_code
    assert code(event.find("EventID"))[0] == event_id


def test_a_store_names_the_requester_as_the_source(engine):
    record(engine, sample(1, action="store", actor_kind="api-client"))
    requester, ferry = message(only_entry(engine)).findall("ActiveParticipant")
    assert code(requester.find("RoleIDCode"))[2] == "Source"
    assert code(ferry.find("RoleIDCode"))[2] == "Destination"
    assert requester.get("UserTypeCode") == "2"


@pytest.mark.parametrize(("outcome", "indicator"), [("denied", "4"), ("failed", "8")])
def test_refusals_and_failures_carry_outcome_and_rule(engine, outcome, indicator):
    record(engine, sample(1, outcome=outcome, rule="no-grant", reason="no grant to INST-B"))
    event = message(only_entry(engine)).find("EventIdentification")
    assert event is not None and event.get("EventOutcomeIndicator") == indicator
    assert event.findtext("EventOutcomeDescription") == f"{outcome}: no-grant: no grant to INST-B"


def test_events_without_patient_or_study_have_no_participant_objects(engine):
    record(engine, sample(1, action="login", patient_id="", study_uid="", client_address=""))
    root = message(only_entry(engine))
    assert root.findall("ParticipantObjectIdentification") == []
    assert "NetworkAccessPointID" not in root.findall("ActiveParticipant")[0].attrib


def test_hostile_values_still_make_well_formed_one_line_xml(engine):
    record(
        engine,
        sample(
            1,
            patient_id='P"<&>\x01\x1f',
            actor="user:<script>\nalert(1)",
            reason="line one\r\nline two",
            outcome=Outcome.DENIED,
        ),
    )
    xml = audit_message_xml(only_entry(engine), SOURCE)
    assert b"\n" not in xml and b"\r" not in xml
    root = ElementTree.fromstring(xml)
    patient = root.find("ParticipantObjectIdentification")
    assert patient is not None and patient.get("ParticipantObjectID") == 'P"<&>'
    assert root.findall("ActiveParticipant")[0].get("UserID") == "user:<script> alert(1)"


def test_syslog_message_and_octet_framing(engine):
    record(engine, sample(1))
    line = syslog_message(only_entry(engine), SOURCE)
    header = SYSLOG_HEADER.match(line)
    assert header is not None
    assert header.group(1) == b"2025-03-01T09:31:00.000000Z"
    assert header.group(2) == b"ferry-1.example.org"
    ElementTree.fromstring(line[header.end() :])
    framed = frame_octet_counted(line)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(line) and rest == line


def test_atna_file_has_one_syslog_message_per_event(engine, tmp_path):
    record_many(engine, [sample(n) for n in range(1, 6)])
    target = tmp_path / "audit.log"
    query = AuditQuery(since=T0.replace(minute=32), until=T0.replace(minute=35))
    assert export_to_file(engine, query, target, "atna", SOURCE) == 3
    lines = target.read_bytes().splitlines()
    assert len(lines) == 3
    for line, pk in zip(lines, (2, 3, 4), strict=True):
        root = ElementTree.fromstring(line.split(UTF8_BOM, 1)[1])
        study = root.findall("ParticipantObjectIdentification")[1]
        assert study.get("ParticipantObjectID") == f"1.2.826.0.1.3680043.8.498.{pk}"
    assert not list(tmp_path.glob("*.partial"))


def test_jsonl_export_can_be_rechecked_without_ferry(engine):
    record_many(engine, [sample(n) for n in range(1, 5)])
    buffer = io.BytesIO()
    assert export_events(engine, AuditQuery(), buffer, "jsonl", SOURCE) == 4
    previous = GENESIS_HASH
    for line in buffer.getvalue().splitlines():
        event = json.loads(line)
        assert event["prev_hash"] == previous
        recomputed = dict(event, at=datetime.fromisoformat(event["at"]))
        recomputed["detail"] = json.dumps(event["detail"], sort_keys=True, separators=(",", ":"))
        assert event_hash(recomputed) == event["hash"]
        previous = event["hash"]


def test_unknown_formats_are_refused(engine):
    with pytest.raises(ValueError, match="atna, jsonl"):
        export_events(engine, AuditQuery(), io.BytesIO(), "csv", SOURCE)
