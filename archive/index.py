"""Index rows for received instances, written in one transaction per batch."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from archive import dicomjson, normalise
from archive.levels import SERIES_TAGS, STUDY_TAGS, level_json
from archive.models import Instance, Patient, Series, Study
from archive.parse import ParsedInstance
from foundation.database import table_of
from foundation.driver_sql import DriverCursor

PATIENT = table_of(Patient)
STUDY = table_of(Study)
SERIES = table_of(Series)
INSTANCE = table_of(Instance)


@dataclass
class IndexEntry:
    """One instance's rows at every level, ready to upsert."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]


@functools.cache
def _column_lengths(table: Table) -> dict[str, int]:
    """The columns of `table` with a length: read once, not for every value of every store."""
    lengths = {column.name: getattr(column.type, "length", None) for column in table.columns}
    return {name: length for name, length in lengths.items() if length}


def _clip_row(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """Hostile or sloppy senders send 10 MB names; the search form keeps what fits."""
    lengths = _column_lengths(table)
    for name, value in row.items():
        length = lengths.get(name)
        if length and isinstance(value, str) and len(value) > length:
            row[name] = value[:length]
    return row


def index_entry(parsed: ParsedInstance, document: dict[str, Any], blob_key: str) -> IndexEntry:
    facts = parsed.facts
    name = facts["PatientName"]
    alphabetic, ideographic, phonetic = normalise.person_name_groups(name)
    patient = {
        "patient_id": facts["PatientID"],
        "issuer_of_patient_id": facts["IssuerOfPatientID"],
    }
    study = {
        "study_instance_uid": parsed.study_instance_uid,
        "patient_name_search": alphabetic,
        "patient_name_ideographic": ideographic,
        "patient_name_phonetic": phonetic,
        "patient_birth_date": normalise.date(facts["PatientBirthDate"]),
        "patient_sex": facts["PatientSex"],
        "study_date": normalise.date(facts["StudyDate"]),
        "study_time": normalise.time(facts["StudyTime"]),
        "accession_number": facts["AccessionNumber"],
        "study_id": facts["StudyID"],
        "study_description": facts["StudyDescription"],
        "referring_physician_name_search": normalise.person_name_groups(
            facts["ReferringPhysicianName"]
        )[0],
        "attrs_json": dicomjson.encode(level_json(document, STUDY_TAGS)),
    }
    series = {
        "series_instance_uid": parsed.series_instance_uid,
        "modality": facts["Modality"],
        "series_number": normalise.integer(facts["SeriesNumber"]),
        "series_description": facts["SeriesDescription"],
        "series_date": normalise.date(facts["SeriesDate"]),
        "body_part_examined": facts["BodyPartExamined"],
        "institution_name": facts["InstitutionName"],
        "performed_procedure_step_start_date": normalise.date(
            facts["PerformedProcedureStepStartDate"]
        ),
        "performed_procedure_step_start_time": normalise.time(
            facts["PerformedProcedureStepStartTime"]
        ),
        "scheduled_procedure_step_id": facts["ScheduledProcedureStepID"],
        "requested_procedure_id": facts["RequestedProcedureID"],
        "attrs_json": dicomjson.encode(level_json(document, SERIES_TAGS)),
    }
    instance = {
        "sop_instance_uid": parsed.sop_instance_uid,
        "sop_class_uid": parsed.sop_class_uid,
        "instance_number": normalise.integer(facts["InstanceNumber"]),
        "rows": normalise.integer(facts["Rows"]),
        "columns": normalise.integer(facts["Columns"]),
        "bits_allocated": normalise.integer(facts["BitsAllocated"]),
        "number_of_frames": normalise.integer(facts["NumberOfFrames"]),
        "transfer_syntax_uid": parsed.transfer_syntax_uid,
        "blob_key": blob_key,
        "size": parsed.size,
        "metadata_json": dicomjson.encode(document),
    }
    return IndexEntry(
        patient=_clip_row(PATIENT, patient),
        study=_clip_row(STUDY, study),
        series=_clip_row(SERIES, series),
        instance=_clip_row(INSTANCE, instance),
    )


def _insert_ignoring_conflicts(connection: Connection, table: Table, keys: list[str]) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)


def _upsert_pks(
    connection: Connection, table: Table, keys: list[str], rows: list[dict[str, Any]]
) -> dict[tuple[Any, ...], int]:
    """Insert rows whose key is new; return the primary key of every row's key."""
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(tuple(row[k] for k in keys), row)
    key_columns = [table.c[k] for k in keys]
    found = _select_pks(connection, table, key_columns, list(unique))
    missing = [row for key, row in unique.items() if key not in found]
    if missing:
        connection.execute(_insert_ignoring_conflicts(connection, table, keys), missing)
        found.update(
            _select_pks(connection, table, key_columns, [k for k in unique if k not in found])
        )
    return found


def _select_pks(
    connection: Connection, table: Table, columns: list[Any], keys: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], int]:
    if not keys:
        return {}
    if len(columns) == 1:
        values: list[Any] = [k[0] for k in keys]
    else:
        values = keys
    statement = _pk_query(table, tuple(column.name for column in columns))
    return {tuple(row[1:]): row[0] for row in connection.execute(statement, {"keys": values})}


@functools.cache
def _pk_query(table: Table, names: tuple[str, ...]) -> Select[Any]:
    """Built once per table and key: a store runs three of these, and building a statement
    costs more than executing it."""
    columns = [table.c[name] for name in names]
    key = columns[0] if len(columns) == 1 else tuple_(*columns)
    return select(table.c.pk, *columns).where(key.in_(bindparam("keys", expanding=True)))


@functools.cache
def _known_series_query() -> Select[Any]:
    """The series with their study's and patient's keys, by Series Instance UID."""
    return (
        select(
            SERIES.c.series_instance_uid,
            SERIES.c.pk,
            STUDY.c.pk,
            STUDY.c.study_instance_uid,
            PATIENT.c.pk,
            PATIENT.c.patient_id,
            PATIENT.c.issuer_of_patient_id,
        )
        .join(STUDY, STUDY.c.pk == SERIES.c.study_pk)
        .join(PATIENT, PATIENT.c.pk == STUDY.c.patient_pk)
        .where(SERIES.c.series_instance_uid.in_(bindparam("uids", expanding=True)))
    )


@functools.cache
def _instance_insert(dialect: str) -> Any:
    """Built once per dialect, as `_pk_query`."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(INSTANCE)
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(INSTANCE.c.sop_instance_uid)
    )


def _into_known_series(driver: DriverCursor, entries: Sequence[IndexEntry]) -> list[IndexEntry]:
    """Entries whose series is indexed already, under their own study and patient, get its
    keys from one query; the others are returned, for the upserts. Nothing is written here:
    the upserts would have found all three rows and inserted none."""
    uids = list({entry.series["series_instance_uid"] for entry in entries})
    known = {row[0]: row[1:] for row in driver.execute(_known_series_query(), {"uids": uids})}
    rest = []
    for entry in entries:
        found = known.get(entry.series["series_instance_uid"])
        if found is not None and (
            found[2] == entry.study["study_instance_uid"]
            and (found[4], found[5])
            == (entry.patient["patient_id"], entry.patient["issuer_of_patient_id"])
        ):
            series_pk, study_pk, _, patient_pk = found[:4]
            entry.study["patient_pk"] = patient_pk
            entry.series["study_pk"] = study_pk
            entry.instance["series_pk"] = series_pk
        else:
            rest.append(entry)
    return rest


def insert_entries(connection: Connection, entries: Sequence[IndexEntry]) -> set[str]:
    """Write a batch; returns the SOP Instance UIDs actually inserted (others lost a race).

    Most instances arrive in a series already indexed (every one after a series' first): they
    take its keys from one query instead of an upsert at each of the three levels. That query
    and the instance rows run on the DB-API cursor (`foundation.driver_sql`), in this
    transaction; the upserts of a new series' levels, once per series, through SQLAlchemy.
    """
    if not entries:
        return set()
    driver = DriverCursor(connection)
    rest = _into_known_series(driver, entries)
    if rest:
        _upsert_levels(connection, rest)
    statement = _instance_insert(connection.dialect.name)
    inserted = driver.execute_many(statement, [entry.instance for entry in entries])
    return {row[0] for row in inserted}


def _upsert_levels(connection: Connection, entries: Sequence[IndexEntry]) -> None:
    """Patient, study and series rows inserted where new; every entry gets its keys."""
    patients = _upsert_pks(
        connection, PATIENT, ["patient_id", "issuer_of_patient_id"], [e.patient for e in entries]
    )
    for entry in entries:
        key = (entry.patient["patient_id"], entry.patient["issuer_of_patient_id"])
        entry.study["patient_pk"] = patients[key]
    studies = _upsert_pks(connection, STUDY, ["study_instance_uid"], [e.study for e in entries])
    for entry in entries:
        entry.series["study_pk"] = studies[(entry.study["study_instance_uid"],)]
    series = _upsert_pks(connection, SERIES, ["series_instance_uid"], [e.series for e in entries])
    for entry in entries:
        entry.instance["series_pk"] = series[(entry.series["series_instance_uid"],)]


def replace_entry(connection: Connection, entry: IndexEntry) -> str | None:
    """Point the instance at a new blob; returns the old blob key, to delete after commit.

    The new version may name another series of the study: the series it leaves, if it held
    nothing else, goes (an empty series would still answer QIDO-RS and count in the study)."""
    row = connection.execute(
        select(INSTANCE.c.pk, INSTANCE.c.blob_key, INSTANCE.c.series_pk).where(
            INSTANCE.c.sop_instance_uid == entry.instance["sop_instance_uid"]
        )
    ).first()
    if row is not None:
        connection.execute(INSTANCE.delete().where(INSTANCE.c.pk == row.pk))
    insert_entries(connection, [entry])
    if row is None:
        return None
    still_held = select(INSTANCE.c.pk).where(INSTANCE.c.series_pk == row.series_pk).exists()
    connection.execute(SERIES.delete().where(SERIES.c.pk == row.series_pk, ~still_held))
    return str(row.blob_key)
