"""Test-data factories: small, valid DICOM instances with fresh UIDs (PS3.3 IODs, PS3.10 files)."""

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import Dataset, dcmwrite
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    BasicTextSRStorage,
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sqlalchemy import Engine

from policy import store
from policy.decision import NodeFacts
from policy.models import Node

PRIVATE_CREATOR = "FERRY TEST"
PRIVATE_GROUP = 0x0009
PRIVATE_OB_LENGTH = 2000
ODD_LENGTH_KEYWORD = "StudyDescription"
_ODD_LENGTH_HEADER = b"\x08\x00\x30\x10LO"  # (0008,1030) LO, Explicit VR Little Endian

# Decoded PatientName per Specific Character Set; the Japanese one is the example of PS3.5 H.3.1.
# 東 (not 东) has a GB18030 code outside GB 2312 whose second byte is ASCII "|" (0x7C).
CHARSET_NAMES: dict[str, str] = {
    "ISO_IR 100": "Müller^Jürgen",
    "ISO_IR 144": "Ivanov^Ivan=Иванов^Иван",
    "ISO_IR 192": "Papadopoulos^Dimitris=Παπαδόπουλος^Δημήτρης",
    "ISO 2022 IR 87": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "GB18030": "Wang^XiaoDong=王^小東",
}
# Decoded StudyDescription (LO) per Specific Character Set.
CHARSET_DESCRIPTIONS: dict[str, str] = {
    "ISO_IR 100": "Thorax Übersicht",
    "ISO_IR 144": "КТ грудной клетки",
    "ISO_IR 192": "Αξονική θώρακος",
    "ISO 2022 IR 87": "胸部ＣＴ検査",
    "GB18030": "胸部CT检查",
}


@dataclass(frozen=True)
class StudySpec:
    """Patient, study and series attributes; a fresh spec has fresh UIDs."""

    patient_name: str = "Ferry^Test"
    patient_id: str = "FERRY-0001"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    study_uid: str = field(default_factory=generate_uid)
    accession_number: str = "ACC0001"
    study_date: str = "20240115"
    study_time: str = "101500"
    study_description: str = "Ferry test study"
    referring_physician_name: str = "Referrer^Rita"
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    modality: str | None = None  # None: the factory's own (CT, MR, OT or DOC)
    series_description: str = "Ferry test series"
    series_number: int = 1
    instance_number: int = 1
    institution_name: str = "Ferry General Hospital"
    body_part: str = "CHEST"

    def new_series(self, series_number: int) -> "StudySpec":
        """The same patient and study, a new series."""
        return replace(
            self,
            series_uid=generate_uid(),
            frame_of_reference_uid=generate_uid(),
            series_number=series_number,
            instance_number=1,
        )

    def new_study(self) -> "StudySpec":
        """The same patient, a new study with one new series."""
        return replace(self.new_series(1), study_uid=generate_uid())


def ct_slice(
    rows: int = 64, columns: int = 64, *, spec: StudySpec | None = None, **overrides: object
) -> Dataset:
    """A CT Image Storage instance: 16-bit signed MONOCHROME2, pixels vary with InstanceNumber."""
    spec = spec or StudySpec()
    ds = _base(spec, CTImageStorage, "CT")
    z = 2.5 * spec.instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.KVP = 120
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [round(-0.35 * columns, 2), round(-0.35 * rows, 2), z]
    ds.SliceLocation = z
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    pixels = (_gradient(rows, columns, spec.instance_number) % 2560 - 512).astype(np.int16)
    ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
    return _finish(ds, overrides)


def mr_multiframe(
    frames: int = 10,
    rows: int = 32,
    columns: int = 32,
    *,
    spec: StudySpec | None = None,
    **overrides: object,
) -> Dataset:
    """A Multi-frame Grayscale Word Secondary Capture of MR slices, 12 bits stored."""
    spec = spec or StudySpec()
    ds = _secondary_capture(spec, MultiFrameGrayscaleWordSecondaryCaptureImageStorage, "MR")
    ds.FrameIncrementPointer = Tag("SliceLocationVector")
    ds.SliceLocationVector = [2.5 * frame for frame in range(frames)]
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    volume = np.stack([_gradient(rows, columns, 100 * frame) for frame in range(frames)])
    ds.set_pixel_data(
        (volume % 4096).astype(np.uint16), "MONOCHROME2", 12, generate_instance_uid=False
    )
    return _finish(ds, overrides)


def jpeg_baseline(
    rows: int = 64,
    columns: int = 64,
    *,
    quality: int = 90,
    spec: StudySpec | None = None,
    **overrides: object,
) -> Dataset:
    """An 8-bit Secondary Capture encapsulated as JPEG Baseline, encoded by Pillow."""
    spec = spec or StudySpec()
    ds = _secondary_capture(spec, SecondaryCaptureImageStorage, "OT")
    pixels = (_gradient(rows, columns, spec.instance_number) % 256).astype(np.uint8)
    ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    _mark_lossy(ds, pixels.nbytes, len(buffer.getvalue()), "ISO_10918_1")
    return _finish(ds, overrides)


def jpeg2000(
    lossless: bool = True,
    rows: int = 64,
    columns: int = 64,
    *,
    spec: StudySpec | None = None,
    **overrides: object,
) -> Dataset:
    """A CT slice as JPEG 2000, lossless only (.90) or lossy at 10:1 (.91), via pylibjpeg."""
    ds = ct_slice(rows, columns, spec=spec)
    raw_length = len(ds.PixelData)
    if lossless:
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    else:
        ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_cr=[10], generate_instance_uid=False)
        _mark_lossy(ds, raw_length, len(ds.PixelData), "ISO_15444_1")
    return _finish(ds, overrides)


def rle(
    rows: int = 64, columns: int = 64, *, spec: StudySpec | None = None, **overrides: object
) -> Dataset:
    """A CT slice as RLE Lossless, with pydicom's own encoder."""
    ds = ct_slice(rows, columns, spec=spec)
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    return _finish(ds, overrides)


def encapsulated_pdf(
    pdf_bytes: bytes | None = None, *, spec: StudySpec | None = None, **overrides: object
) -> Dataset:
    """An Encapsulated PDF Storage instance; by default a one-page PDF drawn by Pillow."""
    spec = spec or StudySpec()
    document = minimal_pdf() if pdf_bytes is None else pdf_bytes
    ds = _base(spec, EncapsulatedPDFStorage, "DOC")
    ds.ConversionType = "WSD"
    ds.AcquisitionDateTime = spec.study_date + spec.study_time
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Ferry test report"
    ds.ConceptNameCodeSequence = Sequence()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(document)
    ds.EncapsulatedDocument = document
    del ds.BodyPartExamined  # not in the Encapsulated Document Series module
    return _finish(ds, overrides)


def basic_text_sr(*, spec: StudySpec | None = None, **overrides: object) -> Dataset:
    """A Basic Text SR instance: a report with a title and one text item, no pixels."""
    spec = spec or StudySpec()
    ds = _base(spec, BasicTextSRStorage, "SR")
    del ds.BodyPartExamined
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("11528-7", "LN", "Radiology Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    finding.TextValue = "No abnormality."
    ds.ContentSequence = [finding]
    return _finish(ds, overrides)


def minimal_pdf() -> bytes:
    """A valid one-page PDF of a small blank image."""
    buffer = io.BytesIO()
    Image.new("L", (32, 32), 255).save(buffer, format="PDF")
    return buffer.getvalue()


def with_charset(charset: str, *, spec: StudySpec | None = None, **overrides: object) -> Dataset:
    """A CT slice with PatientName and StudyDescription in `charset`, a CHARSET_NAMES key."""
    if charset not in CHARSET_NAMES:
        raise ValueError(f"no test text for Specific Character Set {charset!r}")
    spec = replace(
        spec or StudySpec(),
        patient_name=CHARSET_NAMES[charset],
        study_description=CHARSET_DESCRIPTIONS[charset],
    )
    # ISO 2022 IR 87 has no ASCII of its own: the default repertoire comes first (PS3.3 C.12.1.1.2).
    value = ["", charset] if charset.startswith("ISO 2022") else charset
    return ct_slice(spec=spec, **{"SpecificCharacterSet": value, **overrides})


def with_private_tags(*, spec: StudySpec | None = None, **overrides: object) -> Dataset:
    """A CT slice with a private block (LO, 2000-byte OB, SQ) and nested standard sequences."""
    ds = ct_slice(spec=spec)
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", "Ferry private text")
    block.add_new(0x02, "OB", bytes(i % 256 for i in range(PRIVATE_OB_LENGTH)))
    block.add_new(0x03, "SQ", Sequence([_code("121311", "DCM", "Localizer")]))
    ds.ReferencedImageSequence = Sequence([_image_reference() for _ in range(2)])
    return _finish(ds, overrides)


def part10_bytes(ds: Dataset) -> bytes:
    """`ds` as a PS3.10 file: preamble, DICM prefix, File Meta Information and dataset."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def without_file_meta_bytes(ds: Dataset) -> bytes:
    """`ds` as a bare Implicit VR Little Endian dataset, no preamble or meta, as old senders do."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        raise ValueError("encapsulated pixel data needs explicit VR; a bare dataset cannot hold it")
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = True
    buffer.is_little_endian = True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def odd_length_value_bytes(*, spec: StudySpec | None = None, **overrides: object) -> bytes:
    """A PS3.10 CT file whose StudyDescription is odd-length on the wire, against PS3.5 7.1.1."""
    ds = ct_slice(spec=spec, **{ODD_LENGTH_KEYWORD: "ODD VALUE", **overrides})
    value = ds[ODD_LENGTH_KEYWORD].value.encode("ascii")
    if len(value) % 2 == 0:
        raise ValueError(f"{ODD_LENGTH_KEYWORD} must have an odd length, not {len(value)}")
    data = part10_bytes(ds)
    padded = _ODD_LENGTH_HEADER + (len(value) + 1).to_bytes(2, "little") + value + b" "
    if data.count(padded) != 1:
        raise ValueError(f"cannot find the encoded {ODD_LENGTH_KEYWORD} exactly once")
    # Safe to shrink: no group length or defined-length sequence encloses a top-level element.
    return data.replace(padded, _ODD_LENGTH_HEADER + len(value).to_bytes(2, "little") + value)


def write_series(
    folder: Path, count: int = 3, *, spec: StudySpec | None = None, **overrides: object
) -> list[Path]:
    """Write `count` CT slices of one series to `folder` as PS3.10 files named by SOP UID."""
    spec = spec or StudySpec()
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for number in range(1, count + 1):
        ds = ct_slice(spec=replace(spec, instance_number=number), **overrides)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(part10_bytes(ds))
        paths.append(path)
    return paths


def study(
    n_series: int = 2,
    per_series: int = 3,
    *,
    spec: StudySpec | None = None,
    **overrides: object,
) -> list[Dataset]:
    """CT slices of one study: `n_series` series of `per_series` instances each."""
    spec = spec or StudySpec()
    instances: list[Dataset] = []
    for series_number in range(1, n_series + 1):
        series = spec.new_series(series_number) if series_number > 1 else spec
        instances += [
            ct_slice(spec=replace(series, instance_number=number), **overrides)
            for number in range(1, per_series + 1)
        ]
    return instances


def _base(spec: StudySpec, sop_class_uid: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.patient_birth_date
    ds.PatientSex = spec.patient_sex
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = ds.ContentDate = spec.study_date
    ds.StudyTime = ds.ContentTime = spec.study_time
    ds.AccessionNumber = spec.accession_number
    ds.StudyID = "1"
    ds.StudyDescription = spec.study_description
    ds.ReferringPhysicianName = spec.referring_physician_name
    ds.SeriesInstanceUID = spec.series_uid
    ds.Modality = spec.modality or modality
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.series_description
    ds.BodyPartExamined = spec.body_part
    ds.InstanceNumber = spec.instance_number
    ds.Manufacturer = "Ferry"
    ds.InstitutionName = spec.institution_name
    return ds


def _secondary_capture(spec: StudySpec, sop_class_uid: str, modality: str) -> Dataset:
    ds = _base(spec, sop_class_uid, modality)
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    return ds


def _finish(ds: Dataset, overrides: dict[str, object]) -> Dataset:
    for keyword, value in overrides.items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"not a DICOM keyword: {keyword!r}")
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _gradient(rows: int, columns: int, offset: int) -> NDArray[np.int64]:
    return np.add.outer(np.arange(rows) * 37, np.arange(columns) * 11) + offset


def _mark_lossy(ds: Dataset, raw_length: int, encoded_length: int, method: str) -> None:
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{raw_length / encoded_length:.2f}"
    ds.LossyImageCompressionMethod = method


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _image_reference() -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = generate_uid()
    item.PurposeOfReferenceCodeSequence = Sequence([_code("121311", "DCM", "Localizer")])
    return item


# -- rendering: colour, MONOCHROME1, VOI LUT, video (appended for the rendered resources) ------

RGB_BLOCKS = ((200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40))  # TL, TR, BL, BR


def rgb_blocks(rows: int = 32, columns: int = 32) -> NDArray[np.uint8]:
    """Four flat colour quadrants: exact in PNG, near-exact through JPEG."""
    pixels = np.zeros((rows, columns, 3), dtype=np.uint8)
    half_r, half_c = rows // 2, columns // 2
    for index, (top, left) in enumerate(((0, 0), (0, half_c), (half_r, 0), (half_r, half_c))):
        pixels[top : top + half_r, left : left + half_c] = RGB_BLOCKS[index]
    return pixels


def rgb_secondary_capture(
    rows: int = 32,
    columns: int = 32,
    *,
    photometric: str = "RGB",
    planar_configuration: int = 0,
    spec: StudySpec | None = None,
    **overrides: object,
) -> Dataset:
    """A native 8-bit colour Secondary Capture of `rgb_blocks`, as RGB or YBR_FULL."""
    from pydicom.pixels import convert_color_space

    spec = spec or StudySpec()
    ds = _secondary_capture(spec, SecondaryCaptureImageStorage, "OT")
    pixels = rgb_blocks(rows, columns)
    if photometric != "RGB":
        pixels = convert_color_space(pixels, "RGB", photometric)
    ds.set_pixel_data(pixels, photometric, 8, generate_instance_uid=False)
    if planar_configuration == 1:
        ds.PlanarConfiguration = 1
        ds.PixelData = np.ascontiguousarray(pixels.transpose(2, 0, 1)).tobytes()
    return _finish(ds, overrides)


def ybr_jpeg(
    rows: int = 32, columns: int = 32, *, spec: StudySpec | None = None, **overrides: object
) -> Dataset:
    """`rgb_blocks` as JPEG Baseline with 4:2:2 chroma, so YBR_FULL_422 (PS3.5 8.2.1)."""
    spec = spec or StudySpec()
    ds = _secondary_capture(spec, SecondaryCaptureImageStorage, "OT")
    pixels = rgb_blocks(rows, columns)
    ds.set_pixel_data(pixels, "RGB", 8, generate_instance_uid=False)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=95, subsampling=1)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    _mark_lossy(ds, pixels.nbytes, len(buffer.getvalue()), "ISO_10918_1")
    return _finish(ds, overrides)


def palette_indices(rows: int = 32, columns: int = 32) -> NDArray[np.uint8]:
    return (_gradient(rows, columns, 0) % 256).astype(np.uint8)


def palette_color(
    rows: int = 32, columns: int = 32, *, spec: StudySpec | None = None, **overrides: object
) -> Dataset:
    """8-bit PALETTE COLOR with 16-bit LUTs: index i shows (i, 255 - i, 128) in 8 bits."""
    spec = spec or StudySpec()
    ds = _secondary_capture(spec, SecondaryCaptureImageStorage, "OT")
    ds.set_pixel_data(
        palette_indices(rows, columns), "PALETTE COLOR", 8, generate_instance_uid=False
    )
    entries = np.arange(256, dtype=np.uint16)
    for colour, values in (("Red", entries), ("Green", 255 - entries), ("Blue", entries * 0 + 128)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", (values * 257).astype("<u2").tobytes())
    return _finish(ds, overrides)


def cr_monochrome1(
    rows: int = 32, columns: int = 32, *, spec: StudySpec | None = None, **overrides: object
) -> Dataset:
    """A Computed Radiography image, 12-bit MONOCHROME1 (white is low), window 2048/4096."""
    from pydicom.uid import ComputedRadiographyImageStorage

    spec = spec or StudySpec()
    ds = _base(spec, ComputedRadiographyImageStorage, "CR")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["A", "F"]
    ds.ViewPosition = "PA"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    pixels = (_gradient(rows, columns, 0) * 3 % 4096).astype(np.uint16)
    ds.set_pixel_data(pixels, "MONOCHROME1", 12, generate_instance_uid=False)
    return _finish(ds, overrides)


def with_voi_lut(*, spec: StudySpec | None = None, **overrides: object) -> Dataset:
    """A CT slice whose only VOI is a VOI LUT Sequence: 8-bit output, squared ramp from -200 HU."""
    ds = ct_slice(spec=spec)
    del ds.WindowCenter
    del ds.WindowWidth
    item = Dataset()
    item.LUTDescriptor = [1024, -200, 8]
    item.LUTData = [(i * i) // (1023 * 1023 // 255 + 1) for i in range(1024)]
    item["LUTData"].VR = "US"
    item["LUTDescriptor"].VR = "SS"
    item.LUTExplanation = "Ferry squared ramp"
    ds.VOILUTSequence = Sequence([item])
    return _finish(ds, overrides)


def mpeg4_video(
    stream: bytes = b"\x00\x00\x00\x18ftypmp42FERRY-TEST-VIDEO",
    *,
    spec: StudySpec | None = None,
    **overrides: object,
) -> Dataset:
    """A Video Photographic Image whose pixel data is `stream` as MPEG-4 AVC/H.264 (4.102)."""
    from pydicom.uid import MPEG4HP41, VideoPhotographicImageStorage

    spec = spec or StudySpec()
    ds = _base(spec, VideoPhotographicImageStorage, "XC")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = 16, 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = 2
    ds.FrameTime = 40
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    return _finish(ds, overrides)


def rle_multiframe(
    frames: int = 4, rows: int = 16, columns: int = 16, **overrides: object
) -> Dataset:
    """The MR multi-frame as RLE Lossless, one fragment per frame and a Basic Offset Table."""
    ds = mr_multiframe(frames, rows, columns)
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    return _finish(ds, overrides)


def jpeg_multiframe(
    frames: int = 3,
    rows: int = 16,
    columns: int = 16,
    *,
    table: str = "basic",
    fragments_per_frame: int = 1,
    spec: StudySpec | None = None,
    **overrides: object,
) -> Dataset:
    """8-bit frames as JPEG Baseline, each encoded alone; `table` is the offset table kept:
    "basic", "extended" (Extended Offset Table, PS3.3 C.7.6.3.1.8) or "none"."""
    from pydicom.encaps import encapsulate_extended
    from pydicom.uid import MultiFrameGrayscaleByteSecondaryCaptureImageStorage

    spec = spec or StudySpec()
    ds = _secondary_capture(spec, MultiFrameGrayscaleByteSecondaryCaptureImageStorage, "OT")
    volume = np.stack([_gradient(rows, columns, 40 * f) % 256 for f in range(frames)])
    ds.set_pixel_data(volume.astype(np.uint8), "MONOCHROME2", 8, generate_instance_uid=False)
    encoded = []
    for frame in volume.astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    if table == "extended":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            encoded
        )
    else:
        ds.PixelData = encapsulate(encoded, fragments_per_frame, has_bot=table == "basic")
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    _mark_lossy(ds, volume.size, sum(map(len, encoded)), "ISO_10918_1")
    return _finish(ds, overrides)


def single_bit_multiframe(
    frames: int = 3, rows: int = 5, columns: int = 5, **overrides: object
) -> Dataset:
    """Bits Allocated 1, 25 pixels a frame: frames are packed end to end, not byte-aligned."""
    from pydicom.pixels import pack_bits
    from pydicom.uid import MultiFrameSingleBitSecondaryCaptureImageStorage

    ds = _secondary_capture(StudySpec(), MultiFrameSingleBitSecondaryCaptureImageStorage, "OT")
    volume = np.stack([_gradient(rows, columns, f) for f in range(frames)]) % 3 == 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pack_bits(volume.astype(np.uint8))  # PS3.5 8.1.1: frames end to end
    ds["PixelData"].VR = "OB"
    return _finish(ds, overrides)


BULK_ELEMENT_LENGTH = 3000  # each binary value of with_bulk_elements: past the 1 KiB inline limit


def with_bulk_elements(*, spec: StudySpec | None = None, **overrides: object) -> Dataset:
    """A CT slice with every kind of bulk data: overlay, ICC profile, a waveform in a sequence,
    a private UN value and an ICC profile two sequences deep, each a distinct byte pattern."""
    ds = ct_slice(spec=spec)

    def pattern(seed: int) -> bytes:
        return bytes((seed + 7 * i) % 256 for i in range(BULK_ELEMENT_LENGTH))

    ds.add_new(0x60000010, "US", 120)  # OverlayRows
    ds.add_new(0x60000011, "US", 200)  # OverlayColumns: 120 × 200 bits = 3000 bytes
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", pattern(1))  # OverlayData
    ds.ICCProfile = pattern(2)
    waveform = Dataset()
    waveform.WaveformOriginality = "ORIGINAL"
    waveform.NumberOfWaveformChannels = 1
    waveform.NumberOfWaveformSamples = BULK_ELEMENT_LENGTH // 2
    waveform.SamplingFrequency = 500
    waveform.WaveformBitsAllocated = 16
    waveform.WaveformSampleInterpretation = "SS"
    waveform.WaveformData = pattern(3)
    ds.WaveformSequence = Sequence([Dataset(), waveform])
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "UN", pattern(4))
    inner = Dataset()
    inner.ICCProfile = pattern(5)
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.ReferencedImageSequence = Sequence([inner])
    ds.OpticalPathSequence = Sequence([path])
    ds["OpticalPathSequence"].is_undefined_length = True
    return _finish(ds, overrides)


# -- records ------------------------------------------------------------------------------


def create_node(
    engine: Engine, institution_pk: int, ae_title: str, host: str, port: int, **values: Any
) -> Node:
    """A node stored through the policy store, described as every layer describes one."""
    facts = NodeFacts(0, institution_pk, ae_title, host=host, port=port, **values)
    return store.create_node(engine, facts)
