"""Generated image instances as Part 10 bytes (PS3.10), and STOW-RS request bodies (PS3.18 10.5)."""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

SOP_CLASS_BY_MODALITY = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "PT": PositronEmissionTomographyImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "OT": MultiFrameGrayscaleWordSecondaryCaptureImageStorage,  # the viewing study's multi-frame
}
BOUNDARY = "ferry-bench-7c1e4a9b2d5f"
STOW_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@dataclass(frozen=True)
class SeriesSpec:
    series_uid: str
    number: int
    modality: str
    sop_uids: tuple[str, ...]


@dataclass(frozen=True)
class StudySpec:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    description: str
    rows: int
    series: tuple[SeriesSpec, ...]

    @property
    def instance_count(self) -> int:
        return sum(len(series.sop_uids) for series in self.series)

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(series.modality for series in self.series)


@dataclass(frozen=True)
class Batch:
    """One STOW-RS request body and what it carries."""

    body: bytes
    sop_uids: tuple[str, ...]
    payload_bytes: int

    @property
    def count(self) -> int:
        return len(self.sop_uids)


def derive_uid(salt: str, *parts: object) -> str:
    """A UID that is a pure function of the run's salt and the object's place in the workload."""
    # generate_uid joins its sources without a separator, so ("1", "12") would equal ("11", "2").
    return str(generate_uid(entropy_srcs=["/".join(map(str, (salt, *parts)))]))


@functools.cache
def pixel_data(rows: int, seed: int) -> bytes:
    """Fixed-seed 12-bit noise in 16-bit words: incompressible, like a worst-case CT slice."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4096, size=(rows, rows), dtype=np.uint16).tobytes()


def ct_instance(study: StudySpec, series: SeriesSpec, index: int, seed: int) -> bytes:
    """One single-frame 16-bit image of `series` as Part 10 bytes (Explicit VR Little Endian)."""
    ds = image_dataset(study, series, index)
    ds.PixelData = pixel_data(study.rows, seed)
    return part10(ds)


def image_dataset(study: StudySpec, series: SeriesSpec, index: int) -> Dataset:
    """Instance `index` of `series`, a 16-bit 12-bit-stored image, all but its Pixel Data."""
    sop_uid = series.sop_uids[index]
    sop_class = SOP_CLASS_BY_MODALITY[series.modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = "Ferry Bench"
    ds.ReferringPhysicianName = "WHO^REFERRED"
    ds.StudyDescription = study.description
    ds.SeriesDescription = f"{series.modality} series {series.number}"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.SliceThickness = "1.0"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.number
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = derive_uid(study.study_uid, "frame-of-reference")
    ds.SliceLocation = float(index)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = study.rows
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    return ds


def part10(ds: Dataset) -> bytes:
    """The dataset as a Part 10 file, in the transfer syntax its file meta names."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def iter_study_instances(studies: Iterable[StudySpec], seed: int) -> Iterator[tuple[str, bytes]]:
    """Every instance of `studies` in order, as (SOP Instance UID, Part 10 bytes)."""
    for study in studies:
        for series in study.series:
            for index, sop_uid in enumerate(series.sop_uids):
                yield sop_uid, ct_instance(study, series, index, seed)


def encode_multipart_related(instances: list[bytes]) -> bytes:
    """A multipart/related body with one application/dicom part per instance (PS3.18 8.6.1.2)."""
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    parts = [piece for instance in instances for piece in (head, instance, b"\r\n")]
    return b"".join([*parts, f"--{BOUNDARY}--\r\n".encode()])


def iter_batches(instances: Iterable[tuple[str, bytes]], size: int) -> Iterator[Batch]:
    """Group (SOP Instance UID, bytes) pairs into STOW-RS bodies of at most `size` parts."""
    pending: list[tuple[str, bytes]] = []
    for instance in instances:
        pending.append(instance)
        if len(pending) == size:
            yield _batch(pending)
            pending = []
    if pending:
        yield _batch(pending)


def _batch(instances: list[tuple[str, bytes]]) -> Batch:
    blobs = [blob for _, blob in instances]
    payload = sum(len(blob) for blob in blobs)
    return Batch(encode_multipart_related(blobs), tuple(uid for uid, _ in instances), payload)
