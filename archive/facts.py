"""The attribute values the index keeps in columns, as text: read leniently from a data set.

`archive.index` builds its rows from these; `archive.parse` reads them from pydicom's data
set, `archive.quickread` from the raw values, the same text either way.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

__all__ = ["FACT_KEYWORDS", "FACT_TAGS", "SEQUENCE_FACTS", "facts_of", "text"]

FACT_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "BodyPartExamined", "InstitutionName", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames",
)  # fmt: skip
FACT_TAGS: dict[int, str] = {int(tag_for_keyword(k) or 0): k for k in FACT_KEYWORDS}
# fact -> (sequence, attribute of its first item)
SEQUENCE_FACTS = {
    "ScheduledProcedureStepID": ("RequestAttributesSequence", "ScheduledProcedureStepID"),
    "RequestedProcedureID": ("RequestAttributesSequence", "RequestedProcedureID"),
}


def text(dataset: Dataset, keyword: str) -> str:
    """Read leniently: a value pydicom cannot decode indexes as empty, never fails the store."""
    try:
        value = dataset.get(keyword, "")
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(item) for item in value)
    return str(value).strip()


def _sequence_text(dataset: Dataset, sequence: str, keyword: str) -> str:
    try:
        items = dataset.get(sequence) or []
        return text(items[0], keyword) if items else ""
    except Exception:
        return ""


def facts_of(dataset: Dataset) -> dict[str, str]:
    facts = {keyword: text(dataset, keyword) for keyword in FACT_KEYWORDS}
    for name, (sequence, keyword) in SEQUENCE_FACTS.items():
        facts[name] = _sequence_text(dataset, sequence, keyword)
    return facts
