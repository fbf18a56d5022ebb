"""What the SCP accepts: every storage SOP class pydicom/pynetdicom know, in the syntaxes of
the one transfer-syntax table (`archive.syntaxes`)."""

from __future__ import annotations

from pydicom import uid
from pydicom._uid_dict import UID_dictionary
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import _STORAGE_CLASSES, register_uid

from archive.syntaxes import ENCAPSULATED_UNCOMPRESSED, FAMILIES, JPEG_XL

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: a file-set's index, not sent


def _pydicom_storage_classes() -> set[str]:
    """Every storage SOP class in pydicom's UID dictionary, newer and retired ones too.

    Legacy modalities still send retired classes (the 1993 ultrasound and nuclear medicine
    images); refusing them at negotiation would help no one.
    """
    return {
        sop_class
        for sop_class, (name, kind, _info, _retired, _keyword) in UID_dictionary.items()
        if kind == "SOP Class" and name.endswith("Storage") and sop_class != MEDIA_STORAGE_DIRECTORY
    }


def _register_with_pynetdicom(uids: set[str]) -> None:
    """pynetdicom dispatches a C-STORE only for classes it lists; teach it pydicom's others."""
    for sop_class in sorted(uids - set(_STORAGE_CLASSES.values())):
        register_uid(sop_class, UID_dictionary[sop_class][4], StorageServiceClass)


_register_with_pynetdicom(_pydicom_storage_classes())
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(sorted(set(_STORAGE_CLASSES.values())))

UNCOMPRESSED: tuple[str, ...] = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)
# Named in the table for recognising only: newer than pydicom 3.0, whose reading of a stored
# file in them cannot be relied on, so the SCP does not accept them.
NOT_ACCEPTED = frozenset({ENCAPSULATED_UNCOMPRESSED}) | JPEG_XL


def _accepted() -> list[str]:
    """Uncompressed first, then every other syntax of the one table, family by family."""
    others = [
        syntax
        for family in FAMILIES
        for syntax in sorted(family.syntaxes)
        if syntax not in NOT_ACCEPTED and syntax not in UNCOMPRESSED
    ]
    return [*UNCOMPRESSED, *others]


# Order matters only when a requestor proposes several syntaxes in one context.
ACCEPTED_TRANSFER_SYNTAXES: list[str] = _accepted()
