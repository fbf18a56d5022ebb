"""Query/Retrieve identifiers (PS3.4 C.4.1.1.3, C.4.2.1.4, C.4.3.1.3; models C.3.1, C.3.2).

A C-FIND identifier becomes the archive's own SearchQuery, so DIMSE and QIDO-RS share one
matching. Hierarchical search (C.4.1.3.1.1): a key below the query level with a value to match is
refused with "Identifier does not match SOP Class"; keys at or above it match (a unique key above
the level restricts to its entity). Keys Ferry cannot match, and keys it cannot return at this
level (a lower level's key sent empty, as some viewers do), are optional keys it does not
support (C.2.2.1.3): matched universally or left out, and the responses carry the Pending
Warning status.

A C-MOVE or C-GET identifier names entities by their unique keys: a list of UIDs at the
retrieve level, a single UID at each level above (baseline retrieve, C.4.2.2.1). In Patient Root
the Patient ID restricts when present below the PATIENT level; the UIDs are what locate the
instances, so they are required. Other keys (C.2.2.1.2 forbids them) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID
from pynetdicom import sop_class

from archive import levels
from archive.levels import Level
from archive.search import (
    MATCHABLE,
    REQUEST_ATTRIBUTES_SEQUENCE,
    SEQUENCE_MATCHABLE,
    Filter,
    SearchQuery,
)
from foundation.errors import InvalidQuery

SPECIFIC_CHARACTER_SET = 0x00080005
QUERY_RETRIEVE_LEVEL = 0x00080052
QUERY_RETRIEVE_VIEW = 0x00080053
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056
TIMEZONE_OFFSET_FROM_UTC = 0x00080201
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018
NUMBER_OF_PATIENT_RELATED_STUDIES = 0x00201200
NUMBER_OF_PATIENT_RELATED_SERIES = 0x00201202
NUMBER_OF_PATIENT_RELATED_INSTANCES = 0x00201204
_MAX_VALUE_LENGTH = 4096  # as QIDO-RS: no legitimate key is longer


class QueryLevel(StrEnum):
    """Query/Retrieve Level (0008,0052) values (PS3.4 C.6.1.1.1, C.6.2.1.1)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {QueryLevel.PATIENT: 0, QueryLevel.STUDY: 1, QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}


class InformationModel(StrEnum):
    PATIENT_ROOT = "Patient Root"
    STUDY_ROOT = "Study Root"

    @property
    def levels(self) -> tuple[QueryLevel, ...]:
        if self is InformationModel.PATIENT_ROOT:
            return tuple(QueryLevel)
        return (QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE)


MODELS: dict[str, InformationModel] = {
    sop_class.PatientRootQueryRetrieveInformationModelFind: InformationModel.PATIENT_ROOT,
    sop_class.PatientRootQueryRetrieveInformationModelMove: InformationModel.PATIENT_ROOT,
    sop_class.PatientRootQueryRetrieveInformationModelGet: InformationModel.PATIENT_ROOT,
    sop_class.StudyRootQueryRetrieveInformationModelFind: InformationModel.STUDY_ROOT,
    sop_class.StudyRootQueryRetrieveInformationModelMove: InformationModel.STUDY_ROOT,
    sop_class.StudyRootQueryRetrieveInformationModelGet: InformationModel.STUDY_ROOT,
}

UNIQUE_KEYS: dict[QueryLevel, int] = {
    QueryLevel.PATIENT: PATIENT_ID,
    QueryLevel.STUDY: STUDY_INSTANCE_UID,
    QueryLevel.SERIES: SERIES_INSTANCE_UID,
    QueryLevel.IMAGE: SOP_INSTANCE_UID,
}

# The archive searches patients through their studies: a patient matches when a study does.
ARCHIVE_LEVELS: dict[QueryLevel, Level] = {
    QueryLevel.PATIENT: Level.STUDY,
    QueryLevel.STUDY: Level.STUDY,
    QueryLevel.SERIES: Level.SERIES,
    QueryLevel.IMAGE: Level.INSTANCE,
}

# Patient IE attributes the index keeps with each study (PS3.4 Table C.6-1).
PATIENT_KEYS = frozenset({0x00100010, PATIENT_ID, 0x00100021, 0x00100030, 0x00100040})
PATIENT_COUNTS = frozenset(
    {
        NUMBER_OF_PATIENT_RELATED_STUDIES,
        NUMBER_OF_PATIENT_RELATED_SERIES,
        NUMBER_OF_PATIENT_RELATED_INSTANCES,
    }
)
STUDY_COMPUTED = frozenset(
    {
        levels.MODALITIES_IN_STUDY,
        levels.SOP_CLASSES_IN_STUDY,
        levels.NUMBER_OF_STUDY_RELATED_SERIES,
        levels.NUMBER_OF_STUDY_RELATED_INSTANCES,
    }
)
SERIES_COMPUTED = frozenset({levels.NUMBER_OF_SERIES_RELATED_INSTANCES})
IMAGE_KEYS = levels.INSTANCE_TAGS | {
    tag for tag, spec in MATCHABLE.items() if spec.level is Level.INSTANCE
} - {levels.SOP_CLASSES_IN_STUDY}

# Always in a response (C.4.1.1.3.2), never matched: ignored in a request.
_ANSWERED_BY_FERRY = frozenset({RETRIEVE_AE_TITLE, INSTANCE_AVAILABILITY})
_NOT_KEYS = frozenset({SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL}) | _ANSWERED_BY_FERRY


class InvalidIdentifier(InvalidQuery):
    """An identifier the Query/Retrieve SOP Class does not allow; names the offending element."""

    def __init__(self, message: str, tag: int | None = None) -> None:
        super().__init__(message)
        self.offending = () if tag is None else (int(tag),)


def identifier_of(event: Any) -> Dataset:
    """The request's Identifier; one that cannot be decoded is an InvalidIdentifier."""
    try:
        identifier: Dataset = event.identifier
    except Exception as error:  # pydicom and pynetdicom raise many kinds for malformed data
        raise InvalidIdentifier(f"the identifier cannot be decoded: {error}"[:200]) from error
    return identifier


def model_of(sop_class_uid: str) -> InformationModel:
    try:
        return MODELS[str(sop_class_uid)]
    except KeyError:
        raise InvalidIdentifier(f"{sop_class_uid} is not a Query/Retrieve SOP Class") from None


def level_of(tag: int, model: InformationModel) -> QueryLevel | None:
    """The level an attribute belongs to in the model; None for one Ferry does not place."""
    if tag in PATIENT_KEYS or tag in PATIENT_COUNTS:
        if model is InformationModel.PATIENT_ROOT:
            return QueryLevel.PATIENT
        return QueryLevel.STUDY  # Study Root: patient attributes are study attributes
    if tag in levels.STUDY_TAGS or tag in STUDY_COMPUTED:
        return QueryLevel.STUDY
    if tag in levels.SERIES_TAGS or tag in SERIES_COMPUTED:
        return QueryLevel.SERIES
    if tag in IMAGE_KEYS:
        return QueryLevel.IMAGE
    return None


def returnable(tag: int, level: QueryLevel) -> bool:
    """Whether Ferry supports the existence of this key at this level (it can answer it)."""
    if level is QueryLevel.PATIENT:
        return tag in PATIENT_KEYS or tag in PATIENT_COUNTS
    if tag in levels.STUDY_TAGS:
        return True
    if level is QueryLevel.STUDY:
        return tag in STUDY_COMPUTED
    if level is QueryLevel.SERIES:
        return tag in levels.SERIES_TAGS or tag in SERIES_COMPUTED
    # An instance's whole DICOM JSON is indexed: any attribute of the instance can be returned.
    return tag in levels.SERIES_TAGS or level_of(tag, InformationModel.STUDY_ROOT) in {
        None,
        QueryLevel.IMAGE,
    }


# -- C-FIND --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FindRequest:
    """A C-FIND identifier read: what to search, and which keys each response carries."""

    model: InformationModel
    level: QueryLevel
    query: SearchQuery  # without scope, limit and offset: the handler sets those
    keys: tuple[DataElement, ...]  # the request's elements Ferry answers, in tag order
    unsupported: tuple[str, ...] = ()  # optional keys not supported for existence or matching
    character_set: tuple[str, ...] = ()  # the request's Specific Character Set
    filters: dict[str, str] = field(default_factory=dict)  # for the audit trail

    @property
    def return_tags(self) -> frozenset[int]:
        return frozenset(int(element.tag) for element in self.keys)


def read_find_request(identifier: Dataset, model: InformationModel) -> FindRequest:
    """The identifier as a search; InvalidQuery (with the offending tags) when it cannot be."""
    level = read_level(identifier, model)
    keys: list[DataElement] = []
    filters: list[Filter] = []
    unsupported: list[str] = []
    for element in _elements(identifier):
        tag = int(element.tag)
        if tag in _NOT_KEYS or element.tag.element == 0:  # group lengths carry no key
            continue
        placed = level_of(tag, model)
        if placed is not None and placed.depth > level.depth:
            if _asks_to_match(element):
                raise InvalidIdentifier(
                    f"{_name(element)} is a {placed} key, below the {level} query level", tag
                )
            unsupported.append(_name(element))  # asked to be returned: not at this level
            continue
        matched, unmatched = _read_key(element)
        filters += matched
        answered = tag != QUERY_RETRIEVE_VIEW and returnable(tag, level)
        if answered:
            keys.append(element)
        if unmatched or not answered:
            unsupported.append(_name(element))  # C.2.2.1.3: matched universally, or left out
    query = SearchQuery(
        level=ARCHIVE_LEVELS[level],
        filters=tuple(filters),
        include_tags=frozenset(int(element.tag) for element in keys),
    )
    return FindRequest(
        model=model,
        level=level,
        query=query,
        keys=tuple(keys),
        unsupported=tuple(unsupported),
        character_set=_character_set(identifier),
        filters={item.attribute: item.value for item in filters},
    )


def _read_key(element: DataElement) -> tuple[list[Filter], bool]:
    """The filters a key asks for, and whether it asks for matching Ferry does not support."""
    tag = int(element.tag)
    if element.VR == "SQ":
        if tag == REQUEST_ATTRIBUTES_SEQUENCE:
            return _request_attributes_filters(element)
        return [], _item_has_values(element)  # other sequences: returned, not matched
    value = _value(element)
    if not value or tag == TIMEZONE_OFFSET_FROM_UTC:  # no time zone adjustment negotiated
        return [], False
    if tag in MATCHABLE and tag not in SEQUENCE_MATCHABLE:
        return [Filter(tag, value, _name(element))], False
    return [], True


def _request_attributes_filters(element: DataElement) -> tuple[list[Filter], bool]:
    """Request Attributes Sequence items: the procedure IDs are matched, as QIDO-RS does."""
    found: list[Filter] = []
    unmatched = False
    for item in element.value or []:
        for inner in _elements(item):
            value = _value(inner) if inner.VR != "SQ" else ""
            if int(inner.tag) in SEQUENCE_MATCHABLE and value:
                found.append(Filter(int(inner.tag), value, f"{_name(element)}.{_name(inner)}"))
            elif value or (inner.VR == "SQ" and len(inner.value or [])):
                unmatched = True
    return found, unmatched


def _asks_to_match(element: DataElement) -> bool:
    return _item_has_values(element) if element.VR == "SQ" else bool(_value(element))


def _item_has_values(element: DataElement) -> bool:
    return any(
        (inner.VR == "SQ" and len(inner.value or [])) or _value(inner)
        for item in element.value or []
        for inner in _elements(item)
    )


# -- C-MOVE and C-GET ----------------------------------------------------------------------


@dataclass(frozen=True)
class RetrieveRequest:
    """The entities a C-MOVE or C-GET names (PS3.4 C.4.2.1.4.1)."""

    level: QueryLevel
    patient_id: str | None = None
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()

    def keys(self) -> dict[str, Any]:
        """For the audit trail."""
        named = {
            "PatientID": self.patient_id,
            "StudyInstanceUID": list(self.study_uids),
            "SeriesInstanceUID": list(self.series_uids),
            "SOPInstanceUID": list(self.sop_instance_uids),
        }
        return {"level": str(self.level)} | {k: v for k, v in named.items() if v}


def read_retrieve_request(identifier: Dataset, model: InformationModel) -> RetrieveRequest:
    level = read_level(identifier, model)
    patient_id = None
    if model is InformationModel.PATIENT_ROOT:  # in Study Root, Patient ID is no unique key
        patient_id = _single_text(identifier, PATIENT_ID, required=level is QueryLevel.PATIENT)
    if level is QueryLevel.PATIENT:
        return RetrieveRequest(level, patient_id)
    uids: dict[QueryLevel, tuple[str, ...]] = {}
    for above_or_at in (QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE):
        if above_or_at.depth > level.depth:
            break
        uids[above_or_at] = _uid_list(
            identifier, UNIQUE_KEYS[above_or_at], single=above_or_at is not level
        )
    return RetrieveRequest(
        level,
        patient_id,
        uids[QueryLevel.STUDY],
        uids.get(QueryLevel.SERIES, ()),
        uids.get(QueryLevel.IMAGE, ()),
    )


def _single_text(identifier: Dataset, tag: int, *, required: bool) -> str | None:
    element = _element(identifier, tag)
    value = _value(element) if element is not None else ""
    if not value:
        if required:
            raise InvalidIdentifier(f"{_keyword(tag)} is required at this level", tag)
        return None
    if any(character in value for character in "*?\\"):
        raise InvalidIdentifier(f"{_keyword(tag)} must be a single value", tag)
    return value


def _uid_list(identifier: Dataset, tag: int, *, single: bool) -> tuple[str, ...]:
    element = _element(identifier, tag)
    value = _value(element) if element is not None else ""
    uids = tuple(uid.strip() for uid in value.split("\\") if uid.strip())
    if not uids:
        raise InvalidIdentifier(f"{_keyword(tag)} is required at this level", tag)
    if single and len(uids) > 1:
        raise InvalidIdentifier(f"{_keyword(tag)} must be a single UID here", tag)
    for uid in uids:
        if not UID(uid).is_valid:
            raise InvalidIdentifier(f"{_keyword(tag)}: {uid[:64]!r} is not a UID", tag)
    return uids


# -- shared --------------------------------------------------------------------------------


def read_level(identifier: Dataset, model: InformationModel) -> QueryLevel:
    element = _element(identifier, QUERY_RETRIEVE_LEVEL)
    text = _value(element).strip().upper() if element is not None else ""
    if not text:
        raise InvalidIdentifier("QueryRetrieveLevel is missing", QUERY_RETRIEVE_LEVEL)
    try:
        level = QueryLevel(text)
    except ValueError:
        level = None
    if level is None or level not in model.levels:
        raise InvalidIdentifier(
            f"QueryRetrieveLevel {text[:16]!r} is not a level of the {model} model",
            QUERY_RETRIEVE_LEVEL,
        )
    return level


def _elements(dataset: Dataset) -> list[DataElement]:
    """Every element, decoded now, so that a malformed one fails here as InvalidQuery."""
    try:
        return [dataset[tag] for tag in list(dataset.keys())]
    except Exception as error:  # pydicom raises many kinds for malformed encodings
        raise InvalidIdentifier(f"the identifier cannot be decoded: {error}"[:200]) from error


def _element(dataset: Dataset, tag: int) -> DataElement | None:
    try:
        element: DataElement | None = dataset.get(tag)
        return element
    except Exception as error:
        raise InvalidIdentifier(f"{_keyword(tag)} cannot be decoded", tag) from error


def _value(element: DataElement | None) -> str:
    """A key's value as one string (multiple values joined by backslash, as sent)."""
    if element is None or element.VR == "SQ":
        return ""
    value = element.value
    if value is None or value == "":
        return ""
    if isinstance(value, bytes):
        text = value.decode("latin-1").rstrip(" \x00")
    elif isinstance(value, MultiValue | list | tuple):
        text = "\\".join(str(item) for item in value)
    else:
        text = str(value)
    if "\x00" in text or len(text) > _MAX_VALUE_LENGTH:
        raise InvalidIdentifier(f"{_name(element)}: value is not acceptable", element.tag)
    return text.strip()


def _character_set(identifier: Dataset) -> tuple[str, ...]:
    element = _element(identifier, SPECIFIC_CHARACTER_SET)
    if element is None or not element.value:
        return ()
    value = element.value
    terms = [value] if isinstance(value, str) else list(value)
    return tuple(str(term).strip() for term in terms)


def _name(element: DataElement) -> str:
    return element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"


def _keyword(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def empty_like(element: DataElement) -> DataElement:
    """A zero-length copy of a request element (a key Ferry has no value for)."""
    if element.VR == "SQ":
        return DataElement(element.tag, "SQ", DicomSequence())
    return DataElement(element.tag, element.VR, None)
