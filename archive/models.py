"""Index tables: patient, study, series, instance (the PS3.4 C.6.1 information model).

Each row keeps the attributes QIDO-RS matches on as columns in a normalised search form
(PN upper-cased, DA/TM/DT as comparable strings) and the level's attributes as DICOM JSON
(`attrs_json`), so searches never open a file. An instance keeps its whole DICOM JSON
(`metadata_json`, bulk data as BulkDataURI) computed once at ingest, and its blob's CRC-32
(`crc32`) once something has read the whole blob (a ZIP download, `exchange.downloads`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from foundation.grants import DEFAULT_GRANT_ACTIONS_TEXT


def _now() -> datetime:
    return datetime.now(UTC)


class Patient(SQLModel, table=True):
    """Identity only: the same Patient ID may carry other names in another sender's studies."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    pk: int | None = Field(default=None, primary_key=True)
    patient_id: str = Field(default="", max_length=64, index=True)
    issuer_of_patient_id: str = Field(default="", max_length=64)


class Study(SQLModel, table=True):
    __tablename__ = "study"
    __table_args__ = (
        Index("ix_study_date_time", "study_date", "study_time"),
        Index("ix_study_patient", "patient_pk"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    patient_pk: int = Field(foreign_key="patient.pk")
    study_instance_uid: str = Field(max_length=64, unique=True)
    # The institution (or security institution) that brought the study in; visibility starts here.
    institution_pk: int | None = Field(default=None, foreign_key="institution.pk", index=True)
    # Patient attributes as this study carries them: matched here, returned from attrs_json.
    patient_name_search: str = Field(default="", max_length=1024, index=True)
    patient_name_ideographic: str = Field(default="", max_length=1024)
    patient_name_phonetic: str = Field(default="", max_length=1024)
    patient_birth_date: str = Field(default="", max_length=8)
    patient_sex: str = Field(default="", max_length=16)
    study_date: str = Field(default="", max_length=8)
    study_time: str = Field(default="", max_length=13)
    accession_number: str = Field(default="", max_length=64, index=True)
    study_id: str = Field(default="", max_length=64)
    study_description: str = Field(default="", max_length=1024)
    referring_physician_name_search: str = Field(default="", max_length=1024)
    attrs_json: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=_now, index=True)


class Series(SQLModel, table=True):
    __tablename__ = "series"
    __table_args__ = (Index("ix_series_study", "study_pk", "series_number"),)

    pk: int | None = Field(default=None, primary_key=True)
    study_pk: int = Field(foreign_key="study.pk")
    series_instance_uid: str = Field(max_length=64, unique=True)
    modality: str = Field(default="", max_length=16, index=True)
    series_number: int | None = Field(default=None)
    series_description: str = Field(default="", max_length=1024)
    series_date: str = Field(default="", max_length=8)
    body_part_examined: str = Field(default="", max_length=16)
    institution_name: str = Field(default="", max_length=1024)
    performed_procedure_step_start_date: str = Field(default="", max_length=8)
    performed_procedure_step_start_time: str = Field(default="", max_length=13)
    scheduled_procedure_step_id: str = Field(default="", max_length=64)
    requested_procedure_id: str = Field(default="", max_length=64)
    attrs_json: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Instance(SQLModel, table=True):
    __tablename__ = "instance"
    __table_args__ = (Index("ix_instance_series", "series_pk", "instance_number"),)

    pk: int | None = Field(default=None, primary_key=True)
    series_pk: int = Field(foreign_key="series.pk")
    sop_instance_uid: str = Field(max_length=64, unique=True)
    sop_class_uid: str = Field(max_length=64, index=True)
    instance_number: int | None = Field(default=None)
    rows: int | None = Field(default=None)
    columns: int | None = Field(default=None)
    bits_allocated: int | None = Field(default=None)
    number_of_frames: int | None = Field(default=None)
    transfer_syntax_uid: str = Field(max_length=64)
    blob_key: str = Field(max_length=512)
    size: int
    metadata_json: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=_now)
    # The CRC-32 of the blob `blob_key` names (ZIP members need it), NULL until first read.
    # Blobs never change under their key: a replaced instance is a new row with a new key,
    # so its CRC starts unknown again, in the transaction that replaces it.
    crc32: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class StudyGrant(SQLModel, table=True):
    """Access to a study for another institution, given by a transfer; may expire or be revoked.

    Rows go when the study goes (`Archive.delete`), in the same transaction.

    Visibility is data: searches join on this table, never filter after the fact.
    """

    __tablename__ = "study_grant"
    __table_args__ = (Index("ix_study_grant_institution", "institution_pk", "study_pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    study_pk: int = Field(foreign_key="study.pk", index=True)
    institution_pk: int = Field(foreign_key="institution.pk")
    granted_at: datetime = Field(default_factory=_now)
    expires_at: datetime | None = Field(default=None)
    revoked_at: datetime | None = Field(default=None)
    reason: str = Field(default="", max_length=256)
    # What the grant lets its holder do (`foundation.grants`): reading, and downloading by default;
    # never deleting, storing into or changing the owner's study.
    actions: str = Field(default=DEFAULT_GRANT_ACTIONS_TEXT, max_length=128)
