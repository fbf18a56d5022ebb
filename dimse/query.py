"""C-FIND SCP, Patient Root and Study Root Query/Retrieve Information Models (PS3.4 C.4.1, C.6).

Matching and visibility are QIDO-RS's own: the identifier becomes an archive SearchQuery whose
scope is what the calling node's institution may search, so nothing is filtered after the fact.
Matches are read a page at a time and answered one Pending response each; a C-CANCEL stops the
answers between two matches. Each response holds exactly the requested keys Ferry supports
(C.4.1.1.3.2), plus Query/Retrieve Level, Retrieve AE Title, Instance Availability and, when a
value needs it, Specific Character Set. Every C-FIND leaves one audit event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine, func, select

from archive.models import Instance, Series, Study
from archive.search import SearchQuery, StudyScope, build_statement, query_parameters, search
from dimse import statuses
from dimse.callers import Caller
from dimse.context import BridgeContext
from dimse.identifiers import (
    NUMBER_OF_PATIENT_RELATED_INSTANCES,
    NUMBER_OF_PATIENT_RELATED_SERIES,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    PATIENT_KEYS,
    TIMEZONE_OFFSET_FROM_UTC,
    FindRequest,
    InvalidIdentifier,
    QueryLevel,
    empty_like,
    identifier_of,
    model_of,
    read_find_request,
)
from foundation.errors import InvalidQuery
from policy.decision import Decision, Resource
from policy.roles import Action

log = logging.getLogger(__name__)

PAGE = 500  # matches read from the index at a time
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_UTF8 = "ISO_IR 192"
_ASCII_ONLY = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})


def handle_find(context: BridgeContext, caller: Caller, event: Any) -> Iterator[tuple[Any, Any]]:
    decision = service_decision(context, caller, Action.SEARCH)
    if not decision.allowed:
        context.audit(caller, Action.SEARCH, decision, institution_pk=caller.institution_pk)
        yield statuses.status_dataset(statuses.NOT_AUTHORIZED, decision.reason), None
        return
    try:
        request = read_find_request(
            identifier_of(event), model_of(event.request.AffectedSOPClassUID)
        )
    except InvalidQuery as error:
        _audit(context, caller, decision, None, outcome="failed", error=str(error))
        yield failure_for(error), None
        return
    scope = StudyScope(caller.principal.institutions_for(Action.SEARCH), context.clock())
    tally = _Tally()
    try:
        yield from _answer(context, request, replace(request.query, scope=scope), event, tally)
    finally:  # also when the association goes away mid-answer
        _audit(context, caller, decision, request, **tally.detail())


def service_decision(context: BridgeContext, caller: Caller, action: Action) -> Decision:
    """May this node query (or retrieve) at all: its institution's rights, narrowed to its own."""
    if caller.node is None:
        return Decision(False, "unknown-node", "an unknown AE may only C-ECHO")
    return context.decide(caller, action, Resource.institution(caller.node.institution_pk))


def failure_for(error: Exception) -> Dataset:
    offending = error.offending if isinstance(error, InvalidIdentifier) else ()
    return statuses.status_dataset(statuses.for_error(error, query=True), str(error), offending)


@dataclass
class _Tally:
    matches: int = 0
    outcome: str = "allowed"
    extra: dict[str, Any] = field(default_factory=dict)

    def detail(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "matches": self.matches, **self.extra}


def _answer(
    context: BridgeContext, request: FindRequest, query: SearchQuery, event: Any, tally: _Tally
) -> Iterator[tuple[Any, Any]]:
    pending = statuses.PENDING_WARNING if request.unsupported else statuses.PENDING
    ae_title = context.config.dicom_ae_title
    try:
        for document in _iter_matches(context.engine, request, query):
            time.sleep(0)  # lets pynetdicom's reader thread take in a C-CANCEL between matches
            if event.is_cancelled:
                tally.extra["cancelled"] = True
                yield statuses.CANCEL, None
                return
            yield pending, response_identifier(request, document, ae_title)
            tally.matches += 1
    except InvalidQuery as error:  # a value the matching cannot use, found on the first page
        tally.outcome, tally.extra["error"] = "failed", str(error)
        yield failure_for(error), None
    except Exception as error:  # the index is gone, say: a failure status, not a crash
        log.exception("C-FIND failed")
        tally.outcome, tally.extra["error"] = "failed", type(error).__name__
        yield (
            statuses.status_dataset(statuses.for_error(error, query=True), "could not search"),
            None,
        )


def _audit(
    context: BridgeContext,
    caller: Caller,
    decision: Decision,
    request: FindRequest | None,
    **detail: Any,
) -> None:
    if request is not None:
        detail |= {
            "level": str(request.level),
            "model": str(request.model),
            "keys": request.filters,
            "returned": sorted(element.keyword or str(element.tag) for element in request.keys),
            "unsupported": list(request.unsupported),
        }
    try:
        context.audit(
            caller, Action.SEARCH, decision, institution_pk=caller.institution_pk, **detail
        )
    except Exception:
        log.exception("could not audit a C-FIND from %s", caller.calling_ae_title)


# -- matches ---------------------------------------------------------------------------------


def _iter_matches(
    engine: Engine, request: FindRequest, query: SearchQuery
) -> Iterator[dict[str, Any]]:
    if request.level is QueryLevel.PATIENT:
        yield from iter_patients(engine, query, request.return_tags)
        return
    offset = 0
    while True:
        result = search(engine, replace(query, limit=PAGE, offset=offset), "")
        for document in result.documents:
            yield orjson.loads(document)
        if not result.truncated:
            return
        offset += PAGE


def iter_patients(
    engine: Engine, query: SearchQuery, wanted: frozenset[int]
) -> Iterator[dict[str, Any]]:
    """Distinct patients of the visible studies that match, as DICOM JSON (C.6.1.1.2).

    A patient's attributes come from the most recently indexed of those studies; the counts
    are of the matching studies only (PS3.4 Table C.3-1).
    """
    studies = build_statement(query).order_by(None).subquery()
    matching = Study.pk.in_(select(studies.c.pk))
    patients = (
        select(Study.patient_pk, func.max(Study.pk), func.count(Study.pk))
        .where(matching)
        .group_by(Study.patient_pk)
        .order_by(Study.patient_pk)
    )
    parameters = query_parameters(query)
    offset = 0
    while True:
        with engine.connect() as connection:
            page = patients.limit(PAGE).offset(offset)
            rows = connection.execute(page, parameters).all()
            documents = _patient_documents(connection, rows, matching, wanted, parameters)
        yield from documents
        if len(rows) < PAGE:
            return
        offset += PAGE


def _patient_documents(
    connection: Connection,
    rows: list[Any],
    matching: Any,
    wanted: frozenset[int],
    parameters: dict[str, Any],
) -> list[dict[str, Any]]:
    latest = dict(
        connection.execute(
            select(Study.pk, Study.attrs_json).where(Study.pk.in_([row[1] for row in rows]))
        ).all()
    )
    pks = [row[0] for row in rows]
    series: dict[int, int] = {}
    instances: dict[int, int] = {}
    if NUMBER_OF_PATIENT_RELATED_SERIES in wanted:
        series = _count_per_patient(connection, Series.pk, matching, pks, parameters)
    if NUMBER_OF_PATIENT_RELATED_INSTANCES in wanted:
        instances = _count_per_patient(connection, Instance.pk, matching, pks, parameters)
    documents = []
    for patient_pk, study_pk, studies in rows:
        attrs = orjson.loads(latest[study_pk])
        document = {key: value for key, value in attrs.items() if int(key, 16) in PATIENT_KEYS}
        document[_key(NUMBER_OF_PATIENT_RELATED_STUDIES)] = {"vr": "IS", "Value": [studies]}
        document[_key(NUMBER_OF_PATIENT_RELATED_SERIES)] = {
            "vr": "IS",
            "Value": [series.get(patient_pk, 0)],
        }
        document[_key(NUMBER_OF_PATIENT_RELATED_INSTANCES)] = {
            "vr": "IS",
            "Value": [instances.get(patient_pk, 0)],
        }
        documents.append(document)
    return documents


def _count_per_patient(
    connection: Connection,
    counted: Any,
    matching: Any,
    pks: list[int],
    parameters: dict[str, Any],
) -> dict[int, int]:
    statement = select(Study.patient_pk, func.count(counted)).join(
        Series, Series.study_pk == Study.pk
    )
    if counted is Instance.pk:
        statement = statement.join(Instance, Instance.series_pk == Series.pk)
    statement = statement.where(matching, Study.patient_pk.in_(pks)).group_by(Study.patient_pk)
    return {pk: count for pk, count in connection.execute(statement, parameters).all()}


def _key(tag: int) -> str:
    return f"{tag:08X}"


# -- response identifiers --------------------------------------------------------------------


def response_identifier(request: FindRequest, document: dict[str, Any], ae_title: str) -> Dataset:
    """The requested keys with this match's values; a key without a value is zero length."""
    identifier = Dataset()
    for requested in request.keys:
        identifier.add(_answered(requested, document.get(_key(int(requested.tag)))))
    for element in list(identifier):
        if int(element.tag) == TIMEZONE_OFFSET_FROM_UTC and element.is_empty:
            del identifier[element.tag]  # never sent zero length (C.4.1.1.3.2)
    identifier.QueryRetrieveLevel = str(request.level)
    identifier.RetrieveAETitle = ae_title
    identifier.InstanceAvailability = "ONLINE"
    character_set = response_character_set(identifier, request.character_set)
    if character_set:
        identifier.SpecificCharacterSet = character_set
    return identifier


def _answered(requested: DataElement, stored: dict[str, Any] | None) -> DataElement:
    """The stored value as the request's element, or the element empty when there is none."""
    if not stored or "BulkDataURI" in stored:
        return empty_like(requested)
    if requested.VR == "SQ":
        stored = _sequence_subset(stored, requested)
    key = _key(int(requested.tag))
    try:
        return Dataset.from_json({key: stored}, lambda *_: b"")[int(requested.tag)]
    except Exception as error:  # a stored value pydicom cannot carry: answered empty
        log.warning("%s left empty in a C-FIND response: %s", requested.keyword, error)
        return empty_like(requested)


def _sequence_subset(stored: dict[str, Any], requested: DataElement) -> dict[str, Any]:
    """Sequence matching returns items holding only the requested item keys (C.2.2.2.6)."""
    items = list(requested.value or [])
    if not items or not len(items[0]):
        return stored  # a zero-length item: the whole sequence
    keys = {_key(int(element.tag)) for element in items[0]}
    kept = [{k: v for k, v in item.items() if k in keys} for item in stored.get("Value", [])]
    return {"vr": "SQ", "Value": kept}


def response_character_set(identifier: Dataset, requested: tuple[str, ...]) -> str:
    """None for ASCII; else the request's own single-byte set when it carries every value, or
    UTF-8 (C.4.1.1.3.2 lets the SCP answer in another set than the one asked in)."""
    texts = list(_texts(identifier))
    if all(text.isascii() for text in texts):
        return ""
    if len(requested) == 1 and requested[0] not in _ASCII_ONLY:
        try:
            codec = convert_encodings(list(requested))[0]
            for text in texts:
                text.encode(codec)
        except Exception:  # unknown to pydicom, or a value it cannot carry
            return _UTF8
        return requested[0]
    return _UTF8


def _texts(dataset: Dataset) -> Iterator[str]:
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or []:
                yield from _texts(item)
        elif element.VR in _TEXT_VRS and not element.is_empty:
            values = element.value if element.VM > 1 else [element.value]
            yield from (str(value) for value in values)
