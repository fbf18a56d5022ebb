"""DIMSE status codes Ferry answers with, and the one mapping from domain errors to them.

PS3.7 Annex C gives the general statuses; PS3.4 gives each service's own (Storage B.2.3,
Query/Retrieve C.4.1.1.4, C.4.2.1.5, C.4.3.1.5, Verification A.4, Storage Commitment J.3.2).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from archive import outcomes
from foundation.errors import (
    FerryError,
    InsufficientStorage,
    InvalidQuery,
    NotFound,
    ServiceUnavailable,
    is_disk_full,
)

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: optional keys not supported
CANCEL = 0xFE00

# General (PS3.7 C.4)
PROCESSING_FAILURE = outcomes.PROCESSING_FAILURE  # 0x0110
NO_SUCH_SOP_CLASS = 0x0118
NOT_AUTHORIZED = outcomes.NOT_AUTHORIZED  # 0x0124: "Refused: Not Authorized"

# Storage (PS3.4 B.2.3)
STORE_OUT_OF_RESOURCES = outcomes.OUT_OF_RESOURCES  # 0xA700
STORE_CANNOT_UNDERSTAND = outcomes.CANNOT_UNDERSTAND  # 0xC000

# Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.5)
FIND_OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_OUT_OF_RESOURCES_MATCHES = 0xA701
MOVE_OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
SUBOPERATIONS_WARNING = 0xB000  # one or more sub-operations failed
SUBOPERATIONS_FAILED = 0xA702

# Storage Commitment (PS3.4 J.3.2, N-ACTION; PS3.7 C.4) and Failure Reason (PS3.3 C.14.1.1)
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
NO_SUCH_ACTION = 0x0123

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, diagnostic
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
DIAG_NO_REASON = 0x01
DIAG_CALLING_AE_NOT_RECOGNISED = 0x03
DIAG_CALLED_AE_NOT_RECOGNISED = 0x07


def for_error(error: Exception, *, query: bool = False) -> int:
    """The status for a domain error raised while serving a DIMSE request."""
    if isinstance(error, InvalidQuery):
        return IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS if query else STORE_CANNOT_UNDERSTAND
    if isinstance(error, NotFound):
        return UNABLE_TO_PROCESS if query else PROCESSING_FAILURE
    # A full disk, the reserve reached, an audit trail that cannot be written: try later.
    if isinstance(error, OSError | InsufficientStorage | ServiceUnavailable) or is_disk_full(error):
        return FIND_OUT_OF_RESOURCES if query else STORE_OUT_OF_RESOURCES
    if isinstance(error, FerryError):
        return UNABLE_TO_PROCESS if query else PROCESSING_FAILURE
    return UNABLE_TO_PROCESS if query else PROCESSING_FAILURE


def status_dataset(code: int, comment: str = "", offending: tuple[int, ...] = ()) -> Dataset:
    """A response status with its Error Comment (at most 64 characters, no backslash)."""
    status = Dataset()
    status.Status = code
    if offending:
        status.OffendingElement = list(offending)
    if comment:
        status.ErrorComment = comment[:64].replace("\\", "/")
    return status
