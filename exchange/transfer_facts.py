"""What a transfer keeps of its studies once they leave the archive: Patient ID, accession.

The Transaction Audit Summary names a transfer's patient and finds it by Patient ID or
accession number through the archive's index while the study is there. Retention (or a
DICOMweb DELETE) removes the index rows, so just before a study goes its facts are written onto
every transfer that carried it (`transfer_study`, and the transfer's own row when it is the
transfer's first study): the patient's story stays findable. Writing them again is harmless.
"""

from __future__ import annotations

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from archive.models import Patient, Study
from exchange.models import Transfer, TransferStudy


def remember_transfer_facts(engine: Engine, study_uid: str) -> int:
    """Write the study's facts onto its transfers; how many transfers carried it."""
    with Session(engine) as session:
        facts = session.exec(
            select(Patient.patient_id, Study.accession_number)
            .join(Study, col(Study.patient_pk) == col(Patient.pk))
            .where(Study.study_instance_uid == study_uid)
        ).first()
    if facts is None:
        return 0
    values = {"patient_id": facts[0][:64], "accession_number": facts[1][:64]}
    with engine.begin() as connection:
        listed = connection.execute(
            update(TransferStudy)
            .where(col(TransferStudy.study_instance_uid) == study_uid)
            .values(**values)
        )
        first = connection.execute(
            update(Transfer).where(col(Transfer.study_instance_uid) == study_uid).values(**values)
        )
    return max(listed.rowcount or 0, first.rowcount or 0)
