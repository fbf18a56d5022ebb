"""Exporting audit events: DICOM audit messages (PS3.15 A.5, IHE ATNA) in RFC 5424 syslog, or JSONL.

An event becomes one `AuditMessage` with EventIdentification (the DCM event code for the action,
CID 400), the requesting user and Ferry as ActiveParticipants, AuditSourceIdentification, and
ParticipantObjectIdentification for the patient and the study (with its accession number).
The `atna` file holds one RFC 5424 syslog message per line (MSGID `IHE+RFC-3881`, facility
authpriv, severity notice), ready for an Audit Record Repository; `frame_octet_counted` gives the
RFC 5425 framing for syslog over TLS. The `jsonl` file keeps every field, hashes included, so
the exported chain can be rechecked elsewhere.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from xml.etree import ElementTree

from sqlalchemy import Engine

from audit.search import AuditEntry, AuditQuery, iter_events
from audit.trail import format_time

SYSLOG_PRI = 10 * 8 + 5  # RFC 5424 6.2.1: facility 10 (authpriv), severity 5 (notice)
SYSLOG_MSGID = "IHE+RFC-3881"
UTF8_BOM = "\ufeff".encode()
FORMATS = ("atna", "jsonl")

# action -> (EventID code, meaning, EventActionCode); PS3.16 CID 400, PS3.15 A.5.3
EVENT_IDS: dict[str, tuple[str, str, str]] = {
    "search": ("110112", "Query", "E"),
    "read-metadata": ("110103", "DICOM Instances Accessed", "R"),
    "read-pixels": ("110103", "DICOM Instances Accessed", "R"),
    "view": ("110103", "DICOM Instances Accessed", "R"),
    "retrieve": ("110104", "DICOM Instances Transferred", "R"),
    "transfer": ("110104", "DICOM Instances Transferred", "R"),
    "store": ("110104", "DICOM Instances Transferred", "C"),
    "download": ("110106", "Export", "R"),
    "delete": ("110105", "DICOM Study Deleted", "D"),
    "request": ("110109", "Order Record", "C"),
    "answer": ("110109", "Order Record", "U"),
    "administer": ("110113", "Security Alert", "E"),
    "audit": ("110101", "Audit Log Used", "R"),
    "login": ("110114", "User Authentication", "E"),
    "logout": ("110114", "User Authentication", "E"),
}
APPLICATION_ACTIVITY = ("110100", "Application Activity", "E")
EVENT_TYPES = {"login": ("110122", "Login"), "logout": ("110123", "Logout")}
OUTCOME_INDICATORS = {"allowed": "0", "denied": "4", "failed": "8"}  # success, minor, serious
SOURCE_ROLE, DESTINATION_ROLE = ("110153", "Source"), ("110152", "Destination")
# Who sends the instances: for these actions the requester receives them, for store it sends.
_PEOPLE = frozenset({"user", "cli"})
_REQUESTER_RECEIVES = frozenset({"retrieve", "transfer", "download", "read-pixels"})


@dataclass(frozen=True)
class AuditSource:
    """Ferry as the audit source and as the application participant."""

    source_id: str  # AuditSourceID, e.g. the public host name
    ae_title: str = "FERRY"
    hostname: str = ""


def audit_message(entry: AuditEntry, source: AuditSource) -> ElementTree.Element:
    """The PS3.15 A.5.1 `AuditMessage` for one event."""
    message = _element("AuditMessage")
    message.append(_event_identification(entry))
    requester_role, ferry_role = _roles(entry.action)
    message.append(_requester(entry, requester_role))
    message.append(_ferry(source, ferry_role))
    audit_source = _sub(message, "AuditSourceIdentification", AuditSourceID=source.source_id)
    _code(audit_source, "AuditSourceTypeCode", ("4", "Application Server Process"), "RFC-3881")
    if entry.patient_id:
        message.append(_patient(entry))
    if entry.study_uid:
        message.append(_study(entry))
    return message


def audit_message_xml(entry: AuditEntry, source: AuditSource) -> bytes:
    """One line of UTF-8 XML; no declaration, which would add a line (UTF-8 is the default)."""
    xml: bytes = ElementTree.tostring(audit_message(entry, source), encoding="utf-8")
    return xml


def syslog_message(entry: AuditEntry, source: AuditSource, app_name: str = "ferry") -> bytes:
    """RFC 5424 message: `<85>1 TIMESTAMP HOST APP PROCID IHE+RFC-3881 - BOM<AuditMessage…>`."""
    header = " ".join(
        (
            f"<{SYSLOG_PRI}>1",
            format_time(entry.at),
            _syslog_token(source.hostname or source.source_id, 255),
            _syslog_token(app_name, 48),
            str(os.getpid()),
            SYSLOG_MSGID,
            "-",
        )
    )
    return header.encode("ascii") + b" " + UTF8_BOM + audit_message_xml(entry, source)


def frame_octet_counted(message: bytes) -> bytes:
    """RFC 5425 4.3 / RFC 6587 3.4.1 framing: `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(message)).encode("ascii") + b" " + message


def export_events(
    engine: Engine, query: AuditQuery, target: IO[bytes], fmt: str, source: AuditSource
) -> int:
    """Write matching events in chain order; returns how many were written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; formats are {', '.join(FORMATS)}")
    count = 0
    for entry in iter_events(engine, query):
        target.write(_export_line(entry, fmt, source) + b"\n")
        count += 1
    return count


def export_to_file(
    engine: Engine, query: AuditQuery, path: Path, fmt: str, source: AuditSource
) -> int:
    """Write to a temporary name and rename, so a half-written export never looks complete."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as target:
            count = export_events(engine, query, target, fmt, source)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return count


def _export_line(entry: AuditEntry, fmt: str, source: AuditSource) -> bytes:
    if fmt == "atna":
        return syslog_message(entry, source)
    text = json.dumps(entry.as_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _event_identification(entry: AuditEntry) -> ElementTree.Element:
    code, meaning, action_code = EVENT_IDS.get(entry.action, APPLICATION_ACTIVITY)
    element = _element(
        "EventIdentification",
        EventActionCode=action_code,
        EventDateTime=format_time(entry.at),
        EventOutcomeIndicator=OUTCOME_INDICATORS.get(entry.outcome, "8"),
    )
    _code(element, "EventID", (code, meaning))
    if entry.action in EVENT_TYPES:
        _code(element, "EventTypeCode", EVENT_TYPES[entry.action])
    if entry.outcome != "allowed" or entry.rule:
        description = ": ".join(part for part in (entry.outcome, entry.rule, entry.reason) if part)
        _sub(element, "EventOutcomeDescription").text = _xml_safe(description)
    return element


def _requester(entry: AuditEntry, role: tuple[str, str] | None) -> ElementTree.Element:
    element = _element(
        "ActiveParticipant",
        UserID=entry.actor or "anonymous",
        UserTypeCode="1" if entry.actor_kind in _PEOPLE else "2",  # person or application
        UserIsRequestor="true",
    )
    if entry.client_address:
        element.set("NetworkAccessPointID", _xml_safe(entry.client_address))
        element.set("NetworkAccessPointTypeCode", "2" if _is_ip(entry.client_address) else "1")
    if role:
        _code(element, "RoleIDCode", role)
    return element


def _ferry(source: AuditSource, role: tuple[str, str] | None) -> ElementTree.Element:
    element = _element(
        "ActiveParticipant", UserID=source.ae_title, UserTypeCode="2", UserIsRequestor="false"
    )
    if source.hostname:
        element.set("NetworkAccessPointID", source.hostname)
        element.set("NetworkAccessPointTypeCode", "2" if _is_ip(source.hostname) else "1")
    if role:
        _code(element, "RoleIDCode", role)
    _code(element, "UserIDTypeCode", ("110119", "Station AE Title"))
    return element


def _patient(entry: AuditEntry) -> ElementTree.Element:
    element = _element(
        "ParticipantObjectIdentification",
        ParticipantObjectID=entry.patient_id,
        ParticipantObjectTypeCode="1",  # person
        ParticipantObjectTypeCodeRole="1",  # patient
    )
    _code(element, "ParticipantObjectIDTypeCode", ("2", "Patient Number"), "RFC-3881")
    return element


def _study(entry: AuditEntry) -> ElementTree.Element:
    element = _element(
        "ParticipantObjectIdentification",
        ParticipantObjectID=entry.study_uid,
        ParticipantObjectTypeCode="2",  # system object
        ParticipantObjectTypeCodeRole="3",  # report
    )
    _code(element, "ParticipantObjectIDTypeCode", ("110180", "Study Instance UID"))
    # Ties the message back to Ferry's own trail: event pk:hash, and the transaction if any.
    _detail(element, "FerryAuditEvent", f"{entry.pk}:{entry.hash}")
    if entry.transaction:
        _detail(element, "FerryTransaction", entry.transaction)
    if entry.accession_number:
        _sub(element, "Accession", Number=entry.accession_number)
    return element


def _roles(action: str) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    if action in _REQUESTER_RECEIVES:
        return DESTINATION_ROLE, SOURCE_ROLE
    if action == "store":
        return SOURCE_ROLE, DESTINATION_ROLE
    return None, None


def _code(
    parent: ElementTree.Element, tag: str, code: tuple[str, str], system: str = "DCM"
) -> ElementTree.Element:
    return _sub(
        parent, tag, **{"csd-code": code[0], "codeSystemName": system, "originalText": code[1]}
    )


def _detail(parent: ElementTree.Element, kind: str, value: str) -> None:
    _sub(
        parent,
        "ParticipantObjectDetail",
        type=kind,
        value=base64.b64encode(value.encode()).decode(),
    )


def _element(tag: str, **attributes: str) -> ElementTree.Element:
    return ElementTree.Element(tag, {k: _xml_safe(v) for k, v in attributes.items()})


def _sub(parent: ElementTree.Element, tag: str, **attributes: str) -> ElementTree.Element:
    return ElementTree.SubElement(parent, tag, {k: _xml_safe(v) for k, v in attributes.items()})


def _xml_safe(text: str) -> str:
    """Drop what XML 1.0 cannot carry; line breaks become spaces (one message, one line)."""
    text = text.replace("\r", " ").replace("\n", " ")
    return "".join(c for c in text if (c >= " " or c == "\t") and c not in "\ufffe\uffff")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _syslog_token(text: str, limit: int) -> str:
    """RFC 5424 header fields: printable US-ASCII without spaces, or the NILVALUE `-`."""
    token = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return token or "-"
