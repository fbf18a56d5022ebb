"""The Image Pixel module as Ferry reads it: one value type, one reader (PS3.3 C.7.6.3).

Frames are located by it (`archive.frames`), received data sets are checked against it
(`archive.completeness`), decoders and encoders are told the pixels by it (`archive.transcoding`,
`archive._encoders`, `dicomweb.decoding`). Bad values are met with explicit leniency, chosen by
the caller (`BadValues`):

- Rows, Columns and Bits Allocated are required: missing, not a number or less than 1, they
  are refused (`PixelModuleInvalid`, naming the attribute) or tolerated (an incomplete module
  whose `problem` says why);
- every other value that is missing or cannot be read takes its default; `defaulted` names it
  and, when a value was there but unreadable, `notes` says so (for a Warning header).

Errors::

    ValueError
    └── PixelModuleInvalid   a required attribute missing or unreadable (BadValues.REFUSE)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset

__all__ = [
    "PIXEL_KEYWORDS",
    "BadValues",
    "PixelModule",
    "PixelModuleInvalid",
    "read_pixel_module",
    "read_pixel_module_from_file",
]

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REQUIRED = ("Rows", "Columns", "BitsAllocated")
_DEFAULTS = {"SamplesPerPixel": 1, "PixelRepresentation": 0, "PlanarConfiguration": 0}
_HEADER_TAGS = [
    "PhotometricInterpretation", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated",
    "BitsStored", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames", *PIXEL_KEYWORDS,
]  # fmt: skip


class BadValues(Enum):
    """What the reader does with a required value that is missing or unreadable."""

    REFUSE = "refuse"  # raise PixelModuleInvalid: frames cannot be found, a store is refused
    TOLERATE = "tolerate"  # an incomplete module: a codec check says "incomplete", not 500


class PixelModuleInvalid(ValueError):
    """A required Image Pixel attribute is missing or unreadable."""

    def __init__(self, keyword: str, message: str) -> None:
        super().__init__(message)
        self.keyword = keyword


@dataclass(frozen=True)
class PixelModule:
    """The Image Pixel values a decoder, an encoder or a frame locator needs.

    `pixel_keyword` is the pixel data element present (None: the data set has none). An
    incomplete module (`problem` set) is only ever returned under BadValues.TOLERATE.
    """

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0
    number_of_frames: int = 1
    pixel_keyword: str | None = "PixelData"
    notes: tuple[str, ...] = ()  # values there but unreadable, read as their default
    defaulted: tuple[str, ...] = ()  # attributes taken as their default (missing or unreadable)
    problem: str | None = None  # why the module is incomplete (BadValues.TOLERATE only)

    @property
    def complete(self) -> bool:
        return self.problem is None

    @property
    def frame_bits(self) -> int:
        """Bits of one stored native frame; YBR_FULL_422 keeps two samples a pixel
        (PS3.3 C.7.6.3.1.2); Bits Allocated 1 is packed."""
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        if self.photometric_interpretation == "YBR_FULL_422" and self.samples_per_pixel == 3:
            bits = bits // 3 * 2
        return bits

    @property
    def native_length(self) -> int:
        """Bytes of every frame decoded: full samples, interleaved."""
        pixels = self.rows * self.columns * self.samples_per_pixel * self.number_of_frames
        return (pixels * self.bits_allocated + 7) // 8


def _incomplete(keyword: str | None, problem: str) -> PixelModule:
    return PixelModule(0, 0, 1, 0, 0, 0, "", pixel_keyword=keyword, problem=problem)


def _present_keyword(dataset: Dataset) -> str | None:
    return next((keyword for keyword in PIXEL_KEYWORDS if keyword in dataset), None)


def read_pixel_module(
    dataset: Dataset, keyword: str | None = None, *, bad_values: BadValues
) -> PixelModule:
    """The Image Pixel module of `dataset`, for its pixel data element `keyword`.

    Without `keyword`, the element present in the data set is meant; a data set without any
    gives an empty module whose `pixel_keyword` is None (that is no bad value).
    """
    keyword = keyword or _present_keyword(dataset)
    if keyword is None:
        return PixelModule(0, 0, 1, 0, 0, 0, "", pixel_keyword=None)
    try:
        return _read(dataset, keyword)
    except PixelModuleInvalid as error:
        if bad_values is BadValues.REFUSE:
            raise
        return _incomplete(keyword, str(error))


def read_pixel_module_from_file(fp: BinaryIO, *, bad_values: BadValues) -> PixelModule:
    """Only the header elements of the Image Pixel module are parsed; pixels stay unread.

    A header that cannot be parsed is a bad value too: refused or an incomplete module.
    """
    try:
        dataset = dcmread(fp, defer_size=256, specific_tags=_HEADER_TAGS)
    except Exception as error:  # pydicom raises many kinds on damaged files
        if bad_values is BadValues.REFUSE:
            raise PixelModuleInvalid("", f"the header cannot be read: {error}") from None
        return _incomplete("PixelData", f"the header cannot be read: {error}")
    return read_pixel_module(dataset, bad_values=bad_values)


def _read(dataset: Dataset, keyword: str) -> PixelModule:
    notes: list[str] = []
    defaulted: list[str] = []

    def number(name: str, default: int | None) -> int:
        value = dataset.get(name)
        if value is None or value == "":
            if default is None:
                raise PixelModuleInvalid(name, f"{name} is missing")
            defaulted.append(name)
            return default
        try:
            read = int(value)
        except (TypeError, ValueError):
            shown = str(value)[:40]
            if default is None:
                raise PixelModuleInvalid(name, f"{name} {shown!r} is not a number") from None
            notes.append(f"{name} {shown!r} is not a number; read as {default}")
            defaulted.append(name)
            return default
        if default is None and read < 1:
            raise PixelModuleInvalid(name, f"{name} {read} is less than 1")
        return read

    rows, columns, bits = (number(name, None) for name in _REQUIRED)
    values = {name: number(name, default) for name, default in _DEFAULTS.items()}
    frames = number("NumberOfFrames", 1)
    if frames < 1:
        notes.append(f"NumberOfFrames {frames} is less than 1; read as 1")
        defaulted.append("NumberOfFrames")
    photometric = str(dataset.get("PhotometricInterpretation") or "").strip()
    if not photometric:
        defaulted.append("PhotometricInterpretation")
    return PixelModule(
        rows=rows,
        columns=columns,
        samples_per_pixel=values["SamplesPerPixel"],
        bits_allocated=bits,
        bits_stored=number("BitsStored", bits),
        pixel_representation=values["PixelRepresentation"],
        photometric_interpretation=photometric or "MONOCHROME2",
        planar_configuration=values["PlanarConfiguration"],
        number_of_frames=max(1, frames),
        pixel_keyword=keyword,
        notes=tuple(notes),
        defaulted=tuple(defaulted),
    )
