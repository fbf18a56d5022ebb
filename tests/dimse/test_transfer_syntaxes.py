"""The SCP's transfer syntaxes come from the one table (archive.syntaxes), uncompressed first."""

from __future__ import annotations

from pydicom import uid

from archive.syntaxes import FAMILIES
from dimse.transfer_syntaxes import ACCEPTED_TRANSFER_SYNTAXES, NOT_ACCEPTED, UNCOMPRESSED


def test_every_syntax_of_the_table_is_accepted_once_but_those_pydicom_cannot_read() -> None:
    table = set().union(*(family.syntaxes for family in FAMILIES))
    assert len(ACCEPTED_TRANSFER_SYNTAXES) == len(set(ACCEPTED_TRANSFER_SYNTAXES))
    assert set(ACCEPTED_TRANSFER_SYNTAXES) == table - NOT_ACCEPTED
    assert all(uid.UID(syntax).is_transfer_syntax for syntax in ACCEPTED_TRANSFER_SYNTAXES)


def test_uncompressed_comes_first_explicit_before_implicit() -> None:
    assert ACCEPTED_TRANSFER_SYNTAXES[:2] == list(UNCOMPRESSED)
    assert (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian) == UNCOMPRESSED
    assert {uid.HEVCMP51, uid.MPEG2MPML, uid.RLELossless, uid.ExplicitVRBigEndian} <= set(
        ACCEPTED_TRANSFER_SYNTAXES
    )
