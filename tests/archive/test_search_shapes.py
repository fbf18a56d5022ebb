"""Searches of plain shapes (no filter, or equality and universal matching alone) run a
statement built once per shape: the same rows, order and answers as the statement built
for the query, and the same visibility."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Column, String, true

from archive.levels import Level
from archive.matching import EQUAL, UNIVERSAL, Kind, match, plain_match
from archive.search import (
    Filter,
    SearchQuery,
    StudyScope,
    build_statement,
    query_parameters,
    search,
)
from archive.store import Archive
from foundation.errors import InvalidQuery
from tests import factories
from tests.policy._people import add_institution

NOW = datetime.now(UTC)
ACCESSION = 0x00080050
PATIENT_ID = 0x00100020
MODALITY = 0x00080060
MODALITIES_IN_STUDY = 0x00080061
SOP_INSTANCE_UID = 0x00080018
STUDY_DESCRIPTION = 0x00081030
ROWS = 0x00280010


def _store(archive: Archive, folder: Path, owner: int, spec: factories.StudySpec) -> list[str]:
    paths = []
    for ds in factories.study(2, 3, spec=spec):
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(factories.part10_bytes(ds))
        paths.append(path)
    outcomes = archive.store_files(paths, institution_pk=owner)
    assert all(outcome.stored for outcome in outcomes)
    return [outcome.sop_instance_uid for outcome in outcomes]


@pytest.fixture
def stored(archive: Archive, tmp_path: Path) -> dict[str, object]:
    """Three studies of one institution, and one of another with the same accession number."""
    ours, theirs = add_institution(archive.engine, "OURS"), add_institution(archive.engine, "THEM")
    specs = [
        factories.StudySpec(accession_number=f"ACC{n}", patient_id=f"PAT{n % 2}") for n in range(3)
    ]
    sops = [_store(archive, tmp_path, ours, spec) for spec in specs]
    foreign = replace(factories.StudySpec(), accession_number="ACC1", patient_id="PAT1")
    _store(archive, tmp_path, theirs, foreign)
    return {"ours": ours, "theirs": theirs, "specs": specs, "sops": sops, "foreign": foreign}


_UID_COLUMN = {Level.STUDY: (1, 0x0020000D), Level.SERIES: (3, 0x0020000E)}


def _uids_built_for_the_query(archive: Archive, query: SearchQuery) -> list[str]:
    """The level's UIDs, in order, that the statement built for the query finds."""
    column, _tag = _UID_COLUMN.get(query.level, (5, SOP_INSTANCE_UID))
    statement = build_statement(query).limit(query.limit + 1).offset(query.offset)
    with archive.engine.connect() as connection:
        return [row[column] for row in connection.execute(statement, query_parameters(query))]


def _uids(documents: list[bytes], tag: int) -> list[str]:
    return [orjson.loads(document)[f"{tag:08X}"]["Value"][0] for document in documents]


def test_plain_shapes_find_what_the_statement_built_for_the_query_finds(
    archive: Archive, stored: dict
) -> None:
    specs, sops = stored["specs"], stored["sops"]
    scope = StudyScope(frozenset({stored["ours"]}), NOW)
    study = specs[1].study_uid
    queries = [
        SearchQuery(Level.STUDY, limit=2, offset=1),
        SearchQuery(Level.STUDY, filters=(Filter(ACCESSION, "ACC1", "AccessionNumber"),)),
        SearchQuery(Level.STUDY, filters=(Filter(PATIENT_ID, "PAT1", "PatientID"),)),
        SearchQuery(Level.STUDY, filters=(Filter(MODALITIES_IN_STUDY, " CT ", "Modality"),)),
        SearchQuery(Level.STUDY, filters=(Filter(PATIENT_ID, "*", "PatientID"),), offset=1),
        SearchQuery(Level.SERIES, study_uid=study),
        SearchQuery(Level.SERIES, study_uid=study, limit=1, offset=1),
        SearchQuery(Level.SERIES, filters=(Filter(MODALITY, "", "Modality"),), limit=4),
        SearchQuery(Level.INSTANCE, study_uid=study, limit=4, offset=1),
        SearchQuery(
            Level.INSTANCE, filters=(Filter(SOP_INSTANCE_UID, sops[2][4], "SOPInstanceUID"),)
        ),
        SearchQuery(Level.INSTANCE, filters=(Filter(ACCESSION, "ACC2", "AccessionNumber"),)),
    ]
    for query in queries:
        scoped = replace(query, scope=scope)
        found = search(archive.engine, scoped, "http://x")
        expected = _uids_built_for_the_query(archive, scoped)
        tag = _UID_COLUMN.get(query.level, (5, SOP_INSTANCE_UID))[1]
        assert expected, query
        assert _uids(found.documents, tag) == expected[: scoped.limit], query
        assert found.truncated == (len(expected) > scoped.limit), query
    by_accession = SearchQuery(
        Level.STUDY, filters=(Filter(ACCESSION, "ACC1", "AccessionNumber"),), scope=scope
    )
    assert _uids(search(archive.engine, by_accession, "").documents, 0x0020000D) == [study]
    sop = SearchQuery(
        Level.INSTANCE,
        filters=(Filter(SOP_INSTANCE_UID, sops[2][4], "SOPInstanceUID"),),
        scope=scope,
    )
    assert _uids(search(archive.engine, sop, "").documents, SOP_INSTANCE_UID) == [sops[2][4]]
    series = search(archive.engine, SearchQuery(Level.SERIES, study_uid=study, scope=scope), "")
    counts = [orjson.loads(d)["00201209"]["Value"] for d in series.documents]
    assert counts == [[3], [3]]


def test_another_institution_sees_only_its_own_study(archive: Archive, stored: dict) -> None:
    theirs = StudyScope(frozenset({stored["theirs"]}), NOW)
    nobody = StudyScope(frozenset(), NOW)
    ours_study = stored["specs"][1].study_uid
    queries = [
        SearchQuery(Level.STUDY, filters=(Filter(ACCESSION, "ACC1", "AccessionNumber"),)),
        SearchQuery(Level.SERIES, study_uid=ours_study),
        SearchQuery(Level.INSTANCE, filters=(Filter(SOP_INSTANCE_UID, stored["sops"][1][0], "x"),)),
    ]
    for query in queries:
        assert search(archive.engine, replace(query, scope=nobody), "").documents == []
    found = search(archive.engine, replace(queries[0], scope=theirs), "").documents
    assert _uids(found, 0x0020000D) == [stored["foreign"].study_uid]
    assert search(archive.engine, replace(queries[1], scope=theirs), "").documents == []
    assert search(archive.engine, replace(queries[2], scope=theirs), "").documents == []


def test_includefield_reads_the_first_instance_of_each_study_and_series(
    archive: Archive, stored: dict
) -> None:
    scope = StudyScope(frozenset({stored["ours"]}), NOW)
    tags = frozenset({STUDY_DESCRIPTION, MODALITY, ROWS})
    studies = search(archive.engine, SearchQuery(Level.STUDY, include_tags=tags, scope=scope), "")
    assert len(studies.documents) == 3
    for document in map(orjson.loads, studies.documents):
        assert document["00080060"]["Value"] == ["CT"]
        assert document["00280010"]["Value"] == [64]
        assert document["00081030"]["Value"] == ["Ferry test study"]
    study = stored["specs"][0].study_uid
    series = search(
        archive.engine,
        SearchQuery(Level.SERIES, study_uid=study, include_tags=tags, scope=scope, offset=1),
        "",
    )
    assert [orjson.loads(d)["00280010"]["Value"] for d in series.documents] == [[64]]


COLUMN = Column("value", String)


@pytest.mark.parametrize(
    ("kind", "value", "plain"),
    [
        (Kind.TEXT, "ACC1", (EQUAL, "ACC1")),
        (Kind.TEXT, " ACC1 ", (EQUAL, " ACC1 ")),
        (Kind.TEXT, "ACC*", None),
        (Kind.TEXT, "", (UNIVERSAL, "")),
        (Kind.TEXT, "*", (UNIVERSAL, "")),
        (Kind.CODE, " MR ", (EQUAL, "MR")),
        (Kind.CODE, "MR,CT", None),
        (Kind.CODE, "M?", None),
        (Kind.UID, "1.2.3", (EQUAL, "1.2.3")),
        (Kind.UID, "1.2.3,", (EQUAL, "1.2.3")),
        (Kind.UID, "1.2.3,1.2.4", None),
        (Kind.PERSON_NAME, "DOE", None),
        (Kind.DATE, "20240101", None),
        (Kind.INTEGER, "1", None),
    ],
)
def test_a_plain_match_is_what_match_builds(kind: Kind, value: str, plain: tuple | None) -> None:
    assert plain_match(kind, value, "Attribute") == plain
    built = match(kind, [COLUMN], value, "Attribute", fuzzy=False)
    if plain is not None and plain[0] == EQUAL:
        assert str(built.compile()) == str((plain[1] == COLUMN).compile())
        assert built.compile().params == (plain[1] == COLUMN).compile().params
    elif plain is not None:
        assert built is true() or str(built.compile()) == str(true().compile())


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_plain_match_refuses_what_match_refuses() -> None:
    for refuse in (plain_match, lambda *a: match(Kind.UID, [COLUMN], *a[1:], fuzzy=False)):
        with pytest.raises(InvalidQuery):
            refuse(Kind.UID, "not-a-uid", "SOPInstanceUID")
