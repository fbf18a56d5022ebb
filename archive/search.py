"""Searching the index at study, series and instance level (PS3.18 10.6, PS3.4 C.6.1).

Every filter becomes part of one SQL query (deeper-level keys as EXISTS), so counts and
paging see only what matched. Answers are DICOM JSON built from the stored level attributes
plus the values the index computes (counts, ModalitiesInStudy, RetrieveURL).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Dialect,
    Engine,
    Select,
    and_,
    bindparam,
    exists,
    false,
    func,
    or_,
    select,
    true,
)

from archive import levels
from archive.dicomjson import BASE_PLACEHOLDER, with_base
from archive.levels import Level
from archive.matching import UNIVERSAL, Kind, match, plain_match
from archive.models import Instance, Patient, Series, Study, StudyGrant
from foundation.driver_sql import Prepared, dbapi_cursor, fetch_all, prepare, prepared
from foundation.grants import grant_allows_clause, live_grant_clause

_ORDER = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}


@dataclass(frozen=True)
class Matchable:
    level: Level
    kind: Kind
    columns: tuple[Any, ...]


# Attributes with search columns. Tag -> where it lives and how it is matched.
MATCHABLE: dict[int, Matchable] = {
    0x00100010: Matchable(
        Level.STUDY,
        Kind.PERSON_NAME,
        (
            Study.patient_name_search,
            Study.patient_name_ideographic,
            Study.patient_name_phonetic,
        ),
    ),
    0x00100020: Matchable(Level.STUDY, Kind.TEXT, (Patient.patient_id,)),
    0x00100021: Matchable(Level.STUDY, Kind.TEXT, (Patient.issuer_of_patient_id,)),
    0x00100030: Matchable(Level.STUDY, Kind.DATE, (Study.patient_birth_date,)),
    0x00100040: Matchable(Level.STUDY, Kind.CODE, (Study.patient_sex,)),
    0x0020000D: Matchable(Level.STUDY, Kind.UID, (Study.study_instance_uid,)),
    0x00080020: Matchable(Level.STUDY, Kind.DATE, (Study.study_date,)),
    0x00080030: Matchable(Level.STUDY, Kind.TIME, (Study.study_time,)),
    0x00080050: Matchable(Level.STUDY, Kind.TEXT, (Study.accession_number,)),
    0x00200010: Matchable(Level.STUDY, Kind.TEXT, (Study.study_id,)),
    0x00081030: Matchable(Level.STUDY, Kind.TEXT, (Study.study_description,)),
    0x00080090: Matchable(Level.STUDY, Kind.PERSON_NAME, (Study.referring_physician_name_search,)),
    0x00080061: Matchable(Level.SERIES, Kind.CODE, (Series.modality,)),  # ModalitiesInStudy
    0x0020000E: Matchable(Level.SERIES, Kind.UID, (Series.series_instance_uid,)),
    0x00080060: Matchable(Level.SERIES, Kind.CODE, (Series.modality,)),
    0x00200011: Matchable(Level.SERIES, Kind.INTEGER, (Series.series_number,)),
    0x0008103E: Matchable(Level.SERIES, Kind.TEXT, (Series.series_description,)),
    0x00080021: Matchable(Level.SERIES, Kind.DATE, (Series.series_date,)),
    0x00180015: Matchable(Level.SERIES, Kind.CODE, (Series.body_part_examined,)),
    0x00080080: Matchable(Level.SERIES, Kind.TEXT, (Series.institution_name,)),
    0x00400244: Matchable(Level.SERIES, Kind.DATE, (Series.performed_procedure_step_start_date,)),
    0x00400245: Matchable(Level.SERIES, Kind.TIME, (Series.performed_procedure_step_start_time,)),
    0x00400009: Matchable(Level.SERIES, Kind.TEXT, (Series.scheduled_procedure_step_id,)),
    0x00401001: Matchable(Level.SERIES, Kind.TEXT, (Series.requested_procedure_id,)),
    0x00080062: Matchable(Level.INSTANCE, Kind.UID, (Instance.sop_class_uid,)),  # in study
    0x00080016: Matchable(Level.INSTANCE, Kind.UID, (Instance.sop_class_uid,)),
    0x00080018: Matchable(Level.INSTANCE, Kind.UID, (Instance.sop_instance_uid,)),
    0x00200013: Matchable(Level.INSTANCE, Kind.INTEGER, (Instance.instance_number,)),
}
REQUEST_ATTRIBUTES_SEQUENCE = 0x00400275
SEQUENCE_MATCHABLE = {0x00400009, 0x00401001}  # only inside RequestAttributesSequence


@dataclass(frozen=True)
class Filter:
    tag: int
    value: str
    attribute: str  # as the client wrote it, for messages


@dataclass(frozen=True)
class StudyScope:
    """The studies a search may see: owned by, or granted to, these institutions at `now`.

    A grant counts only while live and only for the actions it carries (`foundation.grants`).
    """

    institution_pks: frozenset[int]
    now: datetime
    study_uids: frozenset[str] | None = None  # a study-limited token: these studies only
    action: str = "search"

    def condition(self) -> Any:
        """The clause, with its values as bound parameters: pass `parameters()` to execute it."""
        if not self.institution_pks:
            return false()
        return _scope_clause(self.action, limited=self.study_uids is not None)

    def parameters(self) -> dict[str, Any]:
        if not self.institution_pks:
            return {}
        values: dict[str, Any] = {"scope_institutions": sorted(self.institution_pks)}
        values["scope_now"] = self.now
        if self.study_uids is not None:
            values["scope_studies"] = sorted(self.study_uids)
        return values


@functools.cache
def _scope_clause(action: str, *, limited: bool) -> Any:
    """Built once per action: building the clause costs more than running the search."""
    pks = bindparam("scope_institutions", expanding=True)
    active_grant = exists(
        select(StudyGrant.pk).where(
            StudyGrant.study_pk == Study.pk,
            StudyGrant.institution_pk.in_(pks),
            live_grant_clause(StudyGrant.expires_at, StudyGrant.revoked_at, bindparam("scope_now")),
            grant_allows_clause(StudyGrant.actions, action),
        )
    )
    visible = or_(Study.institution_pk.in_(pks), active_grant)
    if not limited:
        return visible
    studies = bindparam("scope_studies", expanding=True)
    return and_(Study.study_instance_uid.in_(studies), visible)


@dataclass(frozen=True)
class SearchQuery:
    level: Level
    study_uid: str | None = None
    series_uid: str | None = None
    filters: tuple[Filter, ...] = ()
    include_tags: frozenset[int] = frozenset()
    include_all: bool = False
    fuzzy: bool = False
    limit: int = 100
    offset: int = 0
    scope: StudyScope | None = None  # None only for Ferry's own use (import, retention)


@dataclass
class SearchResult:
    documents: list[bytes] = field(default_factory=list)
    truncated: bool = False


def _base_statement(level: Level) -> Select[Any]:
    if level is Level.STUDY:
        return select(Study.pk, Study.study_instance_uid, Study.attrs_json).join(
            Patient, Patient.pk == Study.patient_pk
        )
    if level is Level.SERIES:
        return (
            select(
                Series.pk,
                Study.study_instance_uid,
                Study.attrs_json,
                Series.series_instance_uid,
                Series.attrs_json,
            )
            .join(Study, Study.pk == Series.study_pk)
            .join(Patient, Patient.pk == Study.patient_pk)
        )
    return (
        select(
            Instance.pk,
            Study.study_instance_uid,
            Study.attrs_json,
            Series.series_instance_uid,
            Series.attrs_json,
            Instance.sop_instance_uid,
            Instance.metadata_json,
        )
        .join(Series, Series.pk == Instance.series_pk)
        .join(Study, Study.pk == Series.study_pk)
        .join(Patient, Patient.pk == Study.patient_pk)
    )


def _deeper_exists(query_level: Level, filter_level: Level, condition: Any) -> Any:
    """A key below the query level matches if any entity beneath matches it."""
    if filter_level is Level.SERIES:
        return exists(select(Series.pk).where(Series.study_pk == Study.pk, condition))
    if query_level is Level.STUDY:
        inner = (
            select(Instance.pk)
            .join(Series, Series.pk == Instance.series_pk)
            .where(Series.study_pk == Study.pk, condition)
        )
        return exists(inner)
    return exists(select(Instance.pk).where(Instance.series_pk == Series.pk, condition))


_BASE = {level: _base_statement(level) for level in Level}


def build_statement(query: SearchQuery) -> Select[Any]:
    """The search as one statement; execute it with `query_parameters(query)`."""
    statement = _BASE[query.level]
    if query.scope is not None:
        statement = statement.where(query.scope.condition())
    if query.study_uid is not None:
        statement = statement.where(Study.study_instance_uid == query.study_uid)
    if query.series_uid is not None:
        statement = statement.where(Series.series_instance_uid == query.series_uid)
    for item in query.filters:
        spec = MATCHABLE[item.tag]
        condition = match(
            spec.kind, list(spec.columns), item.value, item.attribute, fuzzy=query.fuzzy
        )
        if _ORDER[spec.level] > _ORDER[query.level]:
            condition = _deeper_exists(query.level, spec.level, condition)
        statement = statement.where(condition)
    return _ordered(statement, query.level)


_ORDER_BY = {
    Level.STUDY: (Study.study_date.desc(), Study.study_time.desc(), Study.pk.desc()),
    Level.SERIES: (Study.pk, Series.series_number, Series.pk),
    Level.INSTANCE: (Series.pk, Instance.instance_number, Instance.pk),
}


def _ordered(statement: Select[Any], level: Level) -> Select[Any]:
    return statement.order_by(*_ORDER_BY[level])


def query_parameters(query: SearchQuery) -> dict[str, Any]:
    """The values `build_statement` leaves as bound parameters (the scope's)."""
    return query.scope.parameters() if query.scope is not None else {}


def search(engine: Engine, query: SearchQuery, base_url: str) -> SearchResult:
    plain = _prepared_search(query, engine.dialect)
    rows: list[Any] = []
    if plain is None:  # built for this query, run through SQLAlchemy
        statement = build_statement(query).limit(query.limit + 1).offset(query.offset)
        with engine.connect() as connection:
            rows = list(connection.execute(statement, query_parameters(query)).all())
    with dbapi_cursor(engine) as cursor:
        if plain is not None:
            rows = fetch_all(cursor, plain[0], plain[1])
        truncated = len(rows) > query.limit
        rows = rows[: query.limit]
        reader = _PageReader(cursor, engine.dialect)
        if query.level is Level.STUDY:
            documents = _study_documents(reader, rows, query, base_url)
        elif query.level is Level.SERIES:
            documents = _series_documents(reader, rows, query, base_url)
        else:
            documents = _instance_documents(rows, query, base_url)
    return SearchResult(documents=documents, truncated=truncated)


def _prepared_search(
    query: SearchQuery, dialect: Dialect
) -> tuple[Prepared, dict[str, Any]] | None:
    """The search as a statement built and compiled once for its shape, with its values; None
    when a filter needs more than equality (`build_statement` builds those per query)."""
    filters = []
    values: dict[str, Any] = {"limit": query.limit + 1, "offset": query.offset}
    for position, item in enumerate(query.filters):
        spec = MATCHABLE[item.tag]
        plain = plain_match(spec.kind, item.value, item.attribute)
        if plain is None:
            return None
        filters.append((item.tag, plain[0]))
        values[f"filter_{position}"] = plain[1]
    if query.scope is not None:
        values.update(query.scope.parameters())
    if query.study_uid is not None:
        values["study_uid"] = query.study_uid
    if query.series_uid is not None:
        values["series_uid"] = query.series_uid
    shape = _Shape(
        query.level,
        _scope_shape(query.scope),
        query.study_uid is not None,
        query.series_uid is not None,
        tuple(filters),
    )
    return _prepare_shape(shape, dialect), values


@dataclass(frozen=True)
class _Shape:
    """What a search's statement depends on, its values apart."""

    level: Level
    scope: tuple[str, bool, bool] | None  # (action, has institutions, limited to studies)
    study: bool
    series: bool
    filters: tuple[tuple[int, str], ...]  # (tag, UNIVERSAL or EQUAL)


def _scope_shape(scope: StudyScope | None) -> tuple[str, bool, bool] | None:
    if scope is None:
        return None
    return scope.action, bool(scope.institution_pks), scope.study_uids is not None


@functools.lru_cache(maxsize=256)
def _prepare_shape(shape: _Shape, dialect: Dialect) -> Prepared:
    """`build_statement`'s statement for a shape, its values bound: the same SQL it sends."""
    statement = _BASE[shape.level]
    if shape.scope is not None:
        action, has_institutions, limited = shape.scope
        scope = _scope_clause(action, limited=limited) if has_institutions else false()
        statement = statement.where(scope)
    if shape.study:
        statement = statement.where(Study.study_instance_uid == bindparam("study_uid"))
    if shape.series:
        statement = statement.where(Series.series_instance_uid == bindparam("series_uid"))
    for position, (tag, form) in enumerate(shape.filters):
        spec = MATCHABLE[tag]
        if form == UNIVERSAL:
            condition: Any = true()
        else:
            condition = spec.columns[0] == bindparam(f"filter_{position}")
        if _ORDER[spec.level] > _ORDER[shape.level]:
            condition = _deeper_exists(shape.level, spec.level, condition)
        statement = statement.where(condition)
    statement = _ordered(statement, shape.level)
    statement = statement.limit(bindparam("limit")).offset(bindparam("offset"))
    return prepare(statement, dialect)


# The queries beside the main one, for the page's rows: built once, compiled once per dialect.
_PKS = bindparam("pks", expanding=True)
_STUDY_MODALITIES = (
    select(Series.study_pk, Series.modality, func.count())
    .where(Series.study_pk.in_(_PKS))
    .group_by(Series.study_pk, Series.modality)
)
_STUDY_INSTANCES = (
    select(Series.study_pk, func.count(Instance.pk))
    .join(Instance, Instance.series_pk == Series.pk)
    .where(Series.study_pk.in_(_PKS))
    .group_by(Series.study_pk)
)
_STUDY_SOP_CLASSES = (
    select(Series.study_pk, Instance.sop_class_uid)
    .join(Instance, Instance.series_pk == Series.pk)
    .where(Series.study_pk.in_(_PKS))
    .distinct()
)
_SERIES_INSTANCES = (
    select(Instance.series_pk, func.count(Instance.pk))
    .where(Instance.series_pk.in_(_PKS))
    .group_by(Instance.series_pk)
)
# includefield's attributes that a level does not keep come from its first instance (by pk).
_STUDY_FIRST_INSTANCES = (
    select(Series.study_pk, Instance.metadata_json)
    .join(Series, Series.pk == Instance.series_pk)
    .where(
        Instance.pk.in_(
            select(func.min(Instance.pk))
            .join(Series, Series.pk == Instance.series_pk)
            .where(Series.study_pk.in_(_PKS))
            .group_by(Series.study_pk)
        )
    )
)
_SERIES_FIRST_INSTANCES = select(Instance.series_pk, Instance.metadata_json).where(
    Instance.pk.in_(
        select(func.min(Instance.pk))
        .where(Instance.series_pk.in_(_PKS))
        .group_by(Instance.series_pk)
    )
)


@dataclass(frozen=True)
class _PageReader:
    """Runs the queries beside the main one on the search's DB-API cursor."""

    cursor: Any
    dialect: Dialect

    def rows(self, statement: Select[Any], pks: list[int]) -> list[tuple[Any, ...]]:
        if not pks:
            return []
        return fetch_all(self.cursor, prepared(statement, self.dialect), {"pks": pks})


def _element(vr: str, values: list[Any]) -> dict[str, Any]:
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _key(tag: int) -> str:
    return f"{tag:08X}"


def _study_documents(
    reader: _PageReader, rows: list[Any], query: SearchQuery, base_url: str
) -> list[bytes]:
    pks = [row[0] for row in rows]
    modalities: dict[int, set[str]] = defaultdict(set)
    series_counts: dict[int, int] = defaultdict(int)
    for study_pk, modality, count in reader.rows(_STUDY_MODALITIES, pks):
        series_counts[study_pk] += count
        if modality:
            modalities[study_pk].add(modality)
    instance_counts = dict(reader.rows(_STUDY_INSTANCES, pks))
    want_sop_classes = query.include_all or levels.SOP_CLASSES_IN_STUDY in query.include_tags
    sop_classes: dict[int, set[str]] = defaultdict(set)
    if want_sop_classes:
        for study_pk, sop_class in reader.rows(_STUDY_SOP_CLASSES, pks):
            sop_classes[study_pk].add(sop_class)
    included = _Included(reader, query, levels.STUDY_TAGS, _STUDY_FIRST_INSTANCES, pks)
    documents = []
    for pk, study_uid, attrs in rows:
        document = orjson.loads(attrs)
        document[_key(levels.MODALITIES_IN_STUDY)] = _element("CS", sorted(modalities[pk]))
        document[_key(levels.NUMBER_OF_STUDY_RELATED_SERIES)] = _element("IS", [series_counts[pk]])
        document[_key(levels.NUMBER_OF_STUDY_RELATED_INSTANCES)] = _element(
            "IS", [instance_counts.get(pk, 0)]
        )
        if want_sop_classes:
            document[_key(levels.SOP_CLASSES_IN_STUDY)] = _element(
                "UI", sorted(sop_classes.get(pk, ()))
            )
        _add_common(document, f"{base_url}/studies/{study_uid}")
        included.add_to(document, pk)
        documents.append(_encode(document, base_url))
    return documents


def _series_documents(
    reader: _PageReader, rows: list[Any], query: SearchQuery, base_url: str
) -> list[bytes]:
    pks = [row[0] for row in rows]
    counts = dict(reader.rows(_SERIES_INSTANCES, pks))
    included = _Included(reader, query, _SERIES_LEVEL_TAGS, _SERIES_FIRST_INSTANCES, pks)
    documents = []
    for pk, study_uid, study_attrs, series_uid, series_attrs in rows:
        document = orjson.loads(study_attrs)
        document.update(orjson.loads(series_attrs))
        document[_key(levels.NUMBER_OF_SERIES_RELATED_INSTANCES)] = _element(
            "IS", [counts.get(pk, 0)]
        )
        _add_common(document, f"{base_url}/studies/{study_uid}/series/{series_uid}")
        included.add_to(document, pk)
        documents.append(_encode(document, base_url))
    return documents


def _instance_documents(rows: list[Any], query: SearchQuery, base_url: str) -> list[bytes]:
    documents = []
    wanted = levels.INSTANCE_TAGS | query.include_tags
    for _pk, study_uid, study_attrs, series_uid, series_attrs, sop_uid, metadata in rows:
        document = orjson.loads(study_attrs)
        document.update(orjson.loads(series_attrs))
        instance = orjson.loads(metadata)
        if query.include_all:
            document.update((k, v) for k, v in instance.items() if "BulkDataURI" not in v)
        else:
            document.update((k, v) for k, v in instance.items() if int(k, 16) in wanted)
        path = f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        _add_common(document, base_url + path)
        documents.append(_encode(document, base_url))
    return documents


def _add_common(document: dict[str, Any], retrieve_url: str) -> None:
    document[_key(levels.RETRIEVE_URL)] = _element("UR", [retrieve_url])
    document[_key(levels.INSTANCE_AVAILABILITY)] = _element("CS", ["ONLINE"])


_SERIES_LEVEL_TAGS = levels.STUDY_TAGS | levels.SERIES_TAGS


class _Included:
    """Attributes asked for by includefield that the level does not keep, from each entity's
    first instance: read for the whole page in one query, and only when one is asked for."""

    def __init__(
        self,
        reader: _PageReader,
        query: SearchQuery,
        level_tags: frozenset[int],
        first_instances: Select[Any],
        pks: list[int],
    ) -> None:
        self.keys = [
            _key(tag)
            for tag in sorted(query.include_tags)
            if tag not in level_tags and tag not in levels.COMPUTED_TAGS
        ]
        self.metadata: dict[int, bytes] = {}
        if self.keys:
            self.metadata = dict(reader.rows(first_instances, pks))

    def add_to(self, document: dict[str, Any], pk: int) -> None:
        missing = [key for key in self.keys if key not in document]
        metadata = self.metadata.get(pk) if missing else None
        if metadata is None:
            return
        instance = orjson.loads(metadata)
        document.update((key, instance[key]) for key in missing if key in instance)


def _encode(document: dict[str, Any], base_url: str) -> bytes:
    encoded = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return with_base(encoded, base_url) if BASE_PLACEHOLDER.encode() in encoded else encoded


def encode_json_array(documents: list[bytes]) -> bytes:
    """The answer's body: the documents are in memory already, so one piece, sent at once
    (streamed piece by piece, each piece cost a hop to a worker thread and back)."""
    return b"[" + b",".join(documents) + b"]"
