"""Searching for what a request asks: Ferry's archive (QIDO's SearchQuery) and a node (C-FIND).

The request's identifiers fill the query: the Patient ID (or, without one, the name and birth
date), the accession numbers, the study date range and the modalities. Each match comes back
with its patient data, so that the person answering compares it with the request's before
picking (wrong-patient mistakes are the ones clinicians fear most). Ferry reaches nodes through
`RemotePacs`, which the composition root gives (the DIMSE bridge's Q/R SCU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from archive.levels import Level
from archive.search import Filter, SearchQuery, StudyScope, search
from exchange.destinations import node_of
from exchange.parties import Actor
from exchange.request_models import ImagingRequest
from foundation.errors import InvalidQuery
from policy.decision import PolicySnapshot
from policy.roles import Action

MAX_MATCHES = 200

_TAGS = {
    "StudyInstanceUID": 0x0020000D,
    "PatientID": 0x00100020,
    "PatientName": 0x00100010,
    "PatientBirthDate": 0x00100030,
    "StudyDate": 0x00080020,
    "AccessionNumber": 0x00080050,
    "ModalitiesInStudy": 0x00080061,
}


class RemotePacs(Protocol):
    """Ferry's Q/R SCU towards one of an institution's nodes."""

    def find_studies(
        self, node_pk: int, keys: Mapping[str, str], *, requested_by: str, institution_pk: int
    ) -> list[dict[str, str]]:
        """Study-level C-FIND; each answer as keyword -> text."""
        ...

    def retrieve_study(
        self, node_pk: int, study_uid: str, *, requested_by: str, institution_pk: int
    ) -> None:
        """C-MOVE or C-GET into Ferry (stored as the node's institution); raises FerryError."""
        ...

    def echo(self, node_pk: int) -> float:
        """C-ECHO: seconds to the node's answer; NodeFailed (NodeUnavailable) saying why not."""
        ...


@dataclass(frozen=True)
class Candidate:
    """A study that may answer the request, where it is, and whose it is."""

    source: str  # "archive", or the node's AE title
    study_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_date: str
    study_description: str
    modalities: tuple[str, ...]


def query_keys(request: ImagingRequest) -> list[dict[str, str]]:
    """One set of matching keys per accession number (one set without any)."""
    keys: dict[str, str] = {}
    if request.patient_id:
        keys["PatientID"] = request.patient_id
    else:
        keys["PatientName"] = request.patient_name
        keys["PatientBirthDate"] = request.patient_birth_date
    if request.study_date_from or request.study_date_to:
        keys["StudyDate"] = f"{request.study_date_from}-{request.study_date_to}"
    if request.modalities:
        keys["ModalitiesInStudy"] = request.modalities
    accessions = [a for a in request.accession_numbers.split("\\") if a]
    return [keys | {"AccessionNumber": a} for a in accessions] or [keys]


def search_archive(archive_engine: Any, actor: Actor, request: ImagingRequest) -> list[Candidate]:
    """The asked institution's studies (owned or granted) that match, newest first."""
    keys = query_keys(request)
    return find_studies(archive_engine, actor, request.asked_institution_pk, keys)


def find_studies(
    archive_engine: Any, actor: Actor, institution_pk: int, key_sets: list[dict[str, str]]
) -> list[Candidate]:
    """One institution's studies (owned or granted) matching any set of keys (keyword -> QIDO
    value), as the actor may search them; the first match of each study wins."""
    pks = frozenset({institution_pk}) & actor.principal.institutions_for(Action.SEARCH)
    scope = StudyScope(pks, actor.now)
    found: dict[str, Candidate] = {}
    for keys in key_sets:
        filters = tuple(Filter(_TAGS[k], v, k) for k, v in keys.items())
        query = SearchQuery(Level.STUDY, filters=filters, limit=MAX_MATCHES, scope=scope)
        for document in search(archive_engine, query, "").documents:
            candidate = _from_json(orjson.loads(document))
            found.setdefault(candidate.study_uid, candidate)
    return list(found.values())


def search_node(
    pacs: RemotePacs | None,
    actor: Actor,
    request: ImagingRequest,
    ae_title: str,
    policy: PolicySnapshot,
) -> list[Candidate]:
    """The matches on one of the asked institution's nodes (C-FIND, Study Root)."""
    node_pk = node_of(policy, request.asked_institution_pk, ae_title)
    if pacs is None:
        raise InvalidQuery("this Ferry cannot reach nodes from here")
    found: dict[str, Candidate] = {}
    for keys in query_keys(request):
        answers = pacs.find_studies(
            node_pk, keys, requested_by=actor.label, institution_pk=request.asked_institution_pk
        )
        for answer in answers[:MAX_MATCHES]:
            candidate = from_keywords(ae_title, answer)
            if candidate.study_uid:
                found.setdefault(candidate.study_uid, candidate)
    return list(found.values())


def _value(document: Mapping[str, Any], tag: int) -> str:
    values = document.get(f"{tag:08X}", {}).get("Value") or [""]
    first = values[0]
    if isinstance(first, dict):  # PN
        return str(first.get("Alphabetic", ""))
    return str(first)


def _from_json(document: Mapping[str, Any]) -> Candidate:
    modalities = document.get("00080061", {}).get("Value") or []
    return Candidate(
        "archive",
        _value(document, 0x0020000D),
        _value(document, 0x00100020),
        _value(document, 0x00100010),
        _value(document, 0x00100030),
        _value(document, 0x00100040),
        _value(document, 0x00080050),
        _value(document, 0x00080020),
        _value(document, 0x00081030),
        tuple(str(m) for m in modalities),
    )


def from_keywords(source: str, answer: Mapping[str, str]) -> Candidate:
    modalities = answer.get("ModalitiesInStudy", "")
    return Candidate(
        source,
        answer.get("StudyInstanceUID", ""),
        answer.get("PatientID", ""),
        answer.get("PatientName", ""),
        answer.get("PatientBirthDate", ""),
        answer.get("PatientSex", ""),
        answer.get("AccessionNumber", ""),
        answer.get("StudyDate", ""),
        answer.get("StudyDescription", ""),
        tuple(m for m in modalities.split("\\") if m),
    )
