"""The one reader of the Image Pixel module, and its explicit leniency (PS3.3 C.7.6.3)."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset

from archive.pixel_module import (
    BadValues,
    PixelModuleInvalid,
    read_pixel_module,
    read_pixel_module_from_file,
)
from tests import factories


def _set(keyword: str, value: object):  # type: ignore[no-untyped-def]
    def change(ds: Dataset) -> None:
        setattr(ds, keyword, value)

    return change


def _drop(keyword: str):  # type: ignore[no-untyped-def]
    def change(ds: Dataset) -> None:
        delattr(ds, keyword)

    return change


# case: (change, what is said of it)
BAD = {
    "Rows missing": (_drop("Rows"), "Rows is missing"),
    "Columns missing": (_drop("Columns"), "Columns is missing"),
    "BitsAllocated missing": (_drop("BitsAllocated"), "BitsAllocated is missing"),
    "BitsAllocated 0": (_set("BitsAllocated", 0), "BitsAllocated 0 is less than 1"),
    "Rows 0": (_set("Rows", 0), "Rows 0 is less than 1"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_required_values_are_refused_or_tolerated_as_asked(case: str) -> None:
    change, says = BAD[case]
    ds = factories.ct_slice()
    change(ds)
    with pytest.raises(PixelModuleInvalid, match=says):
        read_pixel_module(ds, bad_values=BadValues.REFUSE)
    tolerated = read_pixel_module(ds, bad_values=BadValues.TOLERATE)
    assert not tolerated.complete and tolerated.problem == says
    assert tolerated.pixel_keyword == "PixelData"


def test_other_values_take_their_defaults_and_are_named() -> None:
    ds = factories.ct_slice()
    for keyword in ("BitsStored", "PixelRepresentation", "PhotometricInterpretation"):
        delattr(ds, keyword)
    for bad_values in BadValues:
        module = read_pixel_module(ds, bad_values=bad_values)
        assert module.complete and module.notes == ()
        assert (module.bits_stored, module.pixel_representation) == (module.bits_allocated, 0)
        assert module.photometric_interpretation == "MONOCHROME2"
        assert set(module.defaulted) >= {
            "BitsStored",
            "PixelRepresentation",
            "PhotometricInterpretation",
        }


def test_a_data_set_without_pixel_data_is_no_bad_value() -> None:
    module = read_pixel_module(factories.encapsulated_pdf(), bad_values=BadValues.REFUSE)
    assert module.pixel_keyword is None and module.complete


def test_a_header_that_does_not_parse_is_refused_or_tolerated_as_asked() -> None:
    with pytest.raises(PixelModuleInvalid, match="the header cannot be read"):
        read_pixel_module_from_file(io.BytesIO(b"\x00" * 10), bad_values=BadValues.REFUSE)
    tolerated = read_pixel_module_from_file(io.BytesIO(b"\x00" * 10), bad_values=BadValues.TOLERATE)
    assert tolerated.problem is not None and tolerated.problem.startswith("the header")


def test_the_file_reader_reads_what_the_data_set_reader_reads() -> None:
    ds = factories.mr_multiframe(frames=3)
    from_file = read_pixel_module_from_file(
        io.BytesIO(factories.part10_bytes(ds)), bad_values=BadValues.REFUSE
    )
    assert from_file == read_pixel_module(ds, bad_values=BadValues.REFUSE)
    assert from_file.number_of_frames == 3
