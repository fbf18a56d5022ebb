"""Which attributes belong to which query/retrieve level (PS3.18 Table 10.6.3-3, PS3.4 C.6.1)."""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


# Patient and study attributes kept with each study (returned by study-level QIDO).
STUDY_TAGS = frozenset(
    {
        0x00080020,  # StudyDate
        0x00080030,  # StudyTime
        0x00080050,  # AccessionNumber
        0x00080051,  # IssuerOfAccessionNumberSequence
        0x00080090,  # ReferringPhysicianName
        0x00080201,  # TimezoneOffsetFromUTC
        0x00081030,  # StudyDescription
        0x00081032,  # ProcedureCodeSequence
        0x00081060,  # NameOfPhysiciansReadingStudy
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00100021,  # IssuerOfPatientID
        0x00100030,  # PatientBirthDate
        0x00100040,  # PatientSex
        0x00101010,  # PatientAge
        0x00101020,  # PatientSize
        0x00101030,  # PatientWeight
        0x0020000D,  # StudyInstanceUID
        0x00200010,  # StudyID
        0x00321060,  # RequestedProcedureDescription
    }
)

# Series attributes kept with each series (returned by series-level QIDO).
SERIES_TAGS = frozenset(
    {
        0x00080021,  # SeriesDate
        0x00080031,  # SeriesTime
        0x00080060,  # Modality
        0x00080070,  # Manufacturer
        0x00080080,  # InstitutionName
        0x00081010,  # StationName
        0x0008103E,  # SeriesDescription
        0x00081040,  # InstitutionalDepartmentName
        0x00081090,  # ManufacturerModelName
        0x00180015,  # BodyPartExamined
        0x00181030,  # ProtocolName
        0x0020000E,  # SeriesInstanceUID
        0x00200011,  # SeriesNumber
        0x00200060,  # Laterality
        0x00400244,  # PerformedProcedureStepStartDate
        0x00400245,  # PerformedProcedureStepStartTime
        0x00400275,  # RequestAttributesSequence
    }
)

# Instance attributes returned by default by instance-level QIDO.
INSTANCE_TAGS = frozenset(
    {
        0x00080016,  # SOPClassUID
        0x00080018,  # SOPInstanceUID
        0x00080008,  # ImageType
        0x00080023,  # ContentDate
        0x00080033,  # ContentTime
        0x00200013,  # InstanceNumber
        0x00280008,  # NumberOfFrames
        0x00280010,  # Rows
        0x00280011,  # Columns
        0x00280100,  # BitsAllocated
    }
)

LEVEL_TAGS = {Level.STUDY: STUDY_TAGS, Level.SERIES: SERIES_TAGS, Level.INSTANCE: INSTANCE_TAGS}

# Computed by the index, not copied from any one instance.
MODALITIES_IN_STUDY = 0x00080061
SOP_CLASSES_IN_STUDY = 0x00080062
INSTANCE_AVAILABILITY = 0x00080056
RETRIEVE_URL = 0x00081190
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209
NUMBER_OF_PATIENT_RELATED_STUDIES = 0x00201200
COMPUTED_TAGS = frozenset(
    {
        MODALITIES_IN_STUDY,
        SOP_CLASSES_IN_STUDY,
        INSTANCE_AVAILABILITY,
        RETRIEVE_URL,
        NUMBER_OF_STUDY_RELATED_SERIES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
        NUMBER_OF_SERIES_RELATED_INSTANCES,
    }
)


def level_json(instance: dict[str, object], tags: frozenset[int]) -> dict[str, object]:
    """The part of an instance's DICOM JSON that belongs to one level."""
    return {key: value for key, value in instance.items() if int(key, 16) in tags}
