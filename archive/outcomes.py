"""Per-instance outcomes of a store, and their DICOM status codes (PS3.18 10.5.3, PS3.4 B.2.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Failure reasons (PS3.18 Table 10.5.3-2, PS3.4 Annex B.2.3 and PS3.7 C.4.2)
PROCESSING_FAILURE = 0x0110  # PS3.7 Annex C
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 Annex C
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 Annex C
NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C
OUT_OF_RESOURCES = 0xA700  # PS3.4 Table B.2-1
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # PS3.4 Table B.2-1
CANNOT_UNDERSTAND = 0xC000  # PS3.4 Table B.2-1
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122  # PS3.18 Table 10.5.3-2

# Warning reasons (PS3.4 Table B.2-1)
COERCION_OF_DATA_ELEMENTS = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one received part: stored (failure_reason None) or refused, and why."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    failure_reason: int | None = None
    message: str = ""
    warnings: tuple[int, ...] = field(default_factory=tuple)
    # Refused because a UID is held by another institution's data: for the audit trail only,
    # never told to the sender (who hears a failure that names no owner).
    conflict: bool = False

    @property
    def stored(self) -> bool:
        return self.failure_reason is None
