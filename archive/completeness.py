"""Whether a received data set is whole: its structure, and the pixels its SOP class requires.

Three checks, cheapest first, none decoding a value:

1. the structure is walked to the last byte (`archive.structure`): a data set cut inside any
   element, or whose lengths do not nest, is refused as cannot-understand (PS3.4 B.2.3, 0xC000);
2. an instance of an image storage SOP class, whose IOD has Pixel Data Type 1 (PS3.3 C.7.6.3;
   the float variants and a Pixel Data Provider URL, PS3.3 C.7.6.3.1.5, also count), must
   have pixel data: otherwise the data set does not match its SOP class (0xA900);
3. native pixel data must hold Rows × Columns × Samples per Pixel × Bits Allocated × Number of
   Frames bits (Bits Allocated 1 packed; YBR_FULL_422 two samples a pixel): shorter is 0xA900.
   Rows, Columns and Bits Allocated must then be readable and at least 1; other values are
   read as frames are (`archive.pixel_module`), leniently, so a file stored is a file served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from pydicom import uid
from pydicom.dataset import Dataset

from archive import outcomes
from archive.pixel_module import BadValues, PixelModuleInvalid, read_pixel_module
from archive.structure import MalformedDataSet, PixelElement, walk_data_set

__all__ = ["IMAGE_STORAGE_SOP_CLASSES", "Incomplete", "check_complete"]

_PIXEL_KEYWORDS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}

# Storage SOP classes whose IODs include the Image Pixel module with Pixel Data Type 1 (or one
# of the float pixel data elements, for the maps): PS3.4 Table B.5-1, PS3.3 Annex A.
IMAGE_STORAGE_SOP_CLASSES = frozenset(
    {
        uid.ComputedRadiographyImageStorage,
        uid.DigitalXRayImageStorageForPresentation,
        uid.DigitalXRayImageStorageForProcessing,
        uid.DigitalMammographyXRayImageStorageForPresentation,
        uid.DigitalMammographyXRayImageStorageForProcessing,
        uid.DigitalIntraOralXRayImageStorageForPresentation,
        uid.DigitalIntraOralXRayImageStorageForProcessing,
        uid.CTImageStorage,
        uid.EnhancedCTImageStorage,
        uid.LegacyConvertedEnhancedCTImageStorage,
        uid.MRImageStorage,
        uid.EnhancedMRImageStorage,
        uid.EnhancedMRColorImageStorage,
        uid.LegacyConvertedEnhancedMRImageStorage,
        uid.UltrasoundImageStorage,
        uid.UID("1.2.840.10008.5.1.4.1.1.6"),  # Ultrasound Image Storage (Retired)
        uid.UltrasoundMultiFrameImageStorage,
        uid.UID("1.2.840.10008.5.1.4.1.1.3"),  # Ultrasound Multi-frame (Retired)
        uid.EnhancedUSVolumeStorage,
        uid.PhotoacousticImageStorage,
        uid.NuclearMedicineImageStorage,
        uid.UID("1.2.840.10008.5.1.4.1.1.5"),  # Nuclear Medicine Image Storage (Retired)
        uid.PositronEmissionTomographyImageStorage,
        uid.EnhancedPETImageStorage,
        uid.LegacyConvertedEnhancedPETImageStorage,
        uid.SecondaryCaptureImageStorage,
        uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
        uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
        uid.XRayAngiographicImageStorage,
        uid.EnhancedXAImageStorage,
        uid.XRayRadiofluoroscopicImageStorage,
        uid.EnhancedXRFImageStorage,
        uid.XRay3DAngiographicImageStorage,
        uid.XRay3DCraniofacialImageStorage,
        uid.BreastTomosynthesisImageStorage,
        uid.BreastProjectionXRayImageStorageForPresentation,
        uid.BreastProjectionXRayImageStorageForProcessing,
        uid.IntravascularOpticalCoherenceTomographyImageStorageForPresentation,
        uid.IntravascularOpticalCoherenceTomographyImageStorageForProcessing,
        uid.RTImageStorage,
        uid.VLEndoscopicImageStorage,
        uid.VideoEndoscopicImageStorage,
        uid.VLMicroscopicImageStorage,
        uid.VideoMicroscopicImageStorage,
        uid.VLSlideCoordinatesMicroscopicImageStorage,
        uid.VLPhotographicImageStorage,
        uid.VideoPhotographicImageStorage,
        uid.OphthalmicPhotography8BitImageStorage,
        uid.OphthalmicPhotography16BitImageStorage,
        uid.OphthalmicTomographyImageStorage,
        uid.WideFieldOphthalmicPhotographyStereographicProjectionImageStorage,
        uid.WideFieldOphthalmicPhotography3DCoordinatesImageStorage,
        uid.OphthalmicOpticalCoherenceTomographyEnFaceImageStorage,
        uid.OphthalmicThicknessMapStorage,
        uid.CornealTopographyMapStorage,
        uid.VLWholeSlideMicroscopyImageStorage,
        uid.DermoscopicPhotographyImageStorage,
        uid.ParametricMapStorage,
        uid.SegmentationStorage,
    }
)


class Incomplete(Exception):
    """The data set is not whole; `reason` is the failure reason, `message` the refusal."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Completeness:
    """What the walk learnt: the top-level pixel data element, if any."""

    pixel: PixelElement | None

    @property
    def pixel_vr(self) -> str | None:
        return self.pixel.vr if self.pixel else None


def check_complete(
    handle: BinaryIO, size: int, dataset: Dataset, transfer_syntax_uid: str | None
) -> Completeness:
    """Raise Incomplete unless the data set is whole and has the pixels its class requires."""
    try:
        pixel = walk_data_set(handle, size, transfer_syntax_uid)
    except MalformedDataSet as error:
        raise Incomplete(outcomes.CANNOT_UNDERSTAND, error.reason) from None
    sop_class = str(dataset.get("SOPClassUID", "") or "").strip()
    if pixel is None:
        if sop_class in IMAGE_STORAGE_SOP_CLASSES and "PixelDataProviderURL" not in dataset:
            name = uid.UID(sop_class).name
            raise Incomplete(
                outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                f"PixelData (7FE0,0010) is missing; {name} requires it",
            )
    elif not pixel.encapsulated:
        _check_native_length(dataset, pixel)
    return Completeness(pixel)


def _check_native_length(dataset: Dataset, pixel: PixelElement) -> None:
    keyword = _PIXEL_KEYWORDS[pixel.tag]
    try:
        described = read_pixel_module(dataset, keyword, bad_values=BadValues.REFUSE)
    except PixelModuleInvalid as error:
        raise Incomplete(
            outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is present but {error}"
        ) from None
    needed = (described.frame_bits * described.number_of_frames + 7) // 8
    if pixel.length < needed:
        raise Incomplete(
            outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            f"{keyword} holds {pixel.length} bytes; Rows × Columns × SamplesPerPixel × "
            f"BitsAllocated × NumberOfFrames need {needed}",
        )
