"""The one-pass read (archive.quickread) gives exactly what the pydicom path gives, or gives up.

Every file of pydicom's test corpus, the factories' instances, the benchmark's CT and a set of
hand-made files with awkward values are read both ways: wherever the one-pass read answers, its
DICOM JSON (as stored: the encoded bytes), index rows and identity must equal the pydicom
path's, and it must give up on every file the pydicom path refuses.
"""

from __future__ import annotations

import codecs
import io
import random
import shutil
import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from archive import dicomjson, index
from archive.parse import InvalidInstance, read_received
from archive.quickread import quick_read
from tests import factories

# pydicom warns about the corpus's deliberately odd files while reading them
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SOP, STUDY, SERIES = "1.2.3.4.5.6.1", "1.2.3.4.5.6.2", "1.2.3.4.5.6.3"


def _both(tmp_path: Path, data: bytes) -> tuple[object, object]:
    """(quick read, pydicom read) of the same bytes; each None, an answer or a refusal."""
    quick_path, slow_path = tmp_path / "quick.dcm", tmp_path / "slow.dcm"
    quick_path.write_bytes(data)
    shutil.copyfile(quick_path, slow_path)
    quick = quick_read(quick_path)
    try:
        parsed = read_received(slow_path)
    except InvalidInstance as refusal:
        return quick, refusal
    except Exception as error:  # not refused but failed (damaged bytes pydicom cannot read)
        return quick, error
    assert parsed.dataset is not None
    try:
        document = dicomjson.instance_json(
            parsed.dataset,
            parsed.study_instance_uid,
            parsed.series_instance_uid,
            parsed.sop_instance_uid,
            parsed.pixel_vr,
        )
    except Exception as error:  # Archive.prepare refuses it
        return quick, error
    return quick, (parsed, document)


def assert_same(tmp_path: Path, data: bytes, name: str) -> bool:
    """Equal wherever the one-pass read answers; whether it answered."""
    quick, slow = _both(tmp_path, data)
    if quick is None:
        return False
    assert isinstance(slow, tuple), f"{name}: read quickly, but the pydicom path gives {slow!r}"
    parsed, document = slow
    assert dicomjson.encode(quick.document) == dicomjson.encode(document), name
    assert quick.parsed.facts == parsed.facts, name
    for field in (
        "sop_class_uid",
        "sop_instance_uid",
        "study_instance_uid",
        "series_instance_uid",
        "transfer_syntax_uid",
        "pixel_vr",
        "size",
    ):
        assert getattr(quick.parsed, field) == getattr(parsed, field), (name, field)
    assert quick.parsed.path.read_bytes() == parsed.path.read_bytes(), name
    quick_entry = index.index_entry(quick.parsed, quick.document, "key")
    slow_entry = index.index_entry(parsed, document, "key")
    assert quick_entry == slow_entry, name
    return True


def test_every_corpus_file_reads_the_same_or_is_left_to_pydicom(tmp_path: Path) -> None:
    files = sorted(Path(name) for name in get_testdata_files() if Path(name).is_file())
    assert len(files) > 100
    quick = [path.name for path in files if assert_same(tmp_path, path.read_bytes(), str(path))]
    # not vacuous: the corpus's plain Explicit VR Little Endian images are read in one pass
    assert len(quick) >= 60, quick
    assert {"CT_small.dcm", "MR_small_RLE.dcm", "test-SR.dcm"} <= set(quick), quick


FACTORY_INSTANCES = {
    "ct_slice": lambda: factories.ct_slice(),
    "mr_multiframe": lambda: factories.mr_multiframe(frames=3),
    "jpeg_baseline": lambda: factories.jpeg_baseline(),
    "jpeg2000": lambda: factories.jpeg2000(),
    "rle": lambda: factories.rle(),
    "encapsulated_pdf": lambda: factories.encapsulated_pdf(),
    "basic_text_sr": lambda: factories.basic_text_sr(),
    "latin1": lambda: factories.with_charset("ISO_IR 100"),
    "utf8": lambda: factories.with_charset("ISO_IR 192"),
    "private": lambda: factories.with_private_tags(),
    "bulk": lambda: factories.with_bulk_elements(),
    "single_bit": lambda: factories.single_bit_multiframe(frames=3, rows=5, columns=5),
    "rgb": lambda: factories.rgb_secondary_capture(),
    "voi_lut": lambda: factories.with_voi_lut(),
    "cr": lambda: factories.cr_monochrome1(),
}


@pytest.mark.parametrize("name", sorted(FACTORY_INSTANCES))
def test_factory_instances_read_the_same(tmp_path: Path, name: str) -> None:
    ds = FACTORY_INSTANCES[name]()
    assert_same(tmp_path, factories.part10_bytes(ds), name)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:  # a bare data set: the pydicom path
        assert_same(tmp_path, factories.without_file_meta_bytes(ds), name)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        assert_same(tmp_path, factories.part10_bytes(ds), f"{name}, Implicit VR")


def test_the_benchmark_ct_is_read_in_one_pass(tmp_path: Path) -> None:
    ds = factories.ct_slice(64, 64)
    for keyword in ("ReferencedImageSequence", "ProcedureCodeSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "MÜLLER^JÖRG=ミュラー^ヨルグ"
    assert assert_same(tmp_path, factories.part10_bytes(ds), "ct")


# -- hand-made files: awkward values, one element each, in a plain CT ---------------------------


def _element(tag: int, vr: str, value: bytes) -> bytes:
    if vr == "SQ*":  # undefined length, closed by a sequence delimiter
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"SQ\0\0" + b"\xff" * 4
        return head + value + DELIMITER
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)


def item(*elements: bytes, undefined: bool = False) -> bytes:
    """One sequence item of these elements, of defined or undefined length."""
    body = b"".join(elements)
    if undefined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + body + ITEM_END
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2 == 0:
        return value
    return value + (b"\0" if vr in ("UI", "OB") else b" ")


def hand_made(
    extra: dict[int, tuple[str, bytes]],
    *,
    syntax: str = ExplicitVRLittleEndian,
    sop_class: str = CTImageStorage,
    pixels: bytes | None = b"\0\0" * 16,
    pad: bool = True,
) -> bytes:
    """A Part 10 file: a 4×4 16-bit CT with `extra` elements (raw values, padded to even)."""
    elements: dict[int, tuple[str, bytes]] = {
        0x00080016: ("UI", sop_class.encode()),
        0x00080018: ("UI", SOP.encode()),
        0x0020000D: ("UI", STUDY.encode()),
        0x0020000E: ("UI", SERIES.encode()),
        0x00280002: ("US", struct.pack("<H", 1)),
        0x00280004: ("CS", b"MONOCHROME2"),
        0x00280010: ("US", struct.pack("<H", 4)),
        0x00280011: ("US", struct.pack("<H", 4)),
        0x00280100: ("US", struct.pack("<H", 16)),
        0x00280101: ("US", struct.pack("<H", 16)),
        0x00280103: ("US", struct.pack("<H", 0)),
    }
    elements.update(extra)
    body = b"".join(
        _element(tag, vr, _pad(value, vr) if pad else value)
        for tag, (vr, value) in sorted(elements.items())
    )
    if pixels is not None:
        body += _element(0x7FE00010, "OW", pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = SOP
    meta.TransferSyntaxUID = syntax
    header = DicomBytesIO()
    write_file_meta_info(header, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + header.getvalue() + body


UTF8 = {0x00080005: ("CS", b"ISO_IR 192")}
LATIN1 = {0x00080005: ("CS", b"ISO_IR 100")}
AWKWARD: dict[str, dict[int, tuple[str, bytes]]] = {
    "plain": {},
    "multi-valued strings": {0x00080008: ("CS", b"ORIGINAL\\PRIMARY\\AXIAL")},
    "empty items": {0x00080008: ("CS", b"ORIGINAL\\\\AXIAL\\")},
    "trailing spaces and nulls": {0x00100020: ("LO", b"ID 1 \0 "), 0x00080050: ("SH", b" A ")},
    "leading spaces kept": {0x00081030: ("LO", b"  DESCRIPTION")},
    "backslash in LO": {0x00081030: ("LO", b"A\\B \\ C")},
    "person name groups": {0x00100010: ("PN", b"DOE^JOHN^^^=D^J=d^j")},
    "person name trailing groups": {0x00100010: ("PN", b"DOE^JOHN==")},
    "person name leading group empty": {0x00100010: ("PN", b"=DOE")},
    "person names": {0x00081060: ("PN", b"A^B\\C^D")},
    "person name empty item": {0x00081060: ("PN", b"A^B\\")},
    "person name four groups": {0x00100010: ("PN", b"A=B=C=D")},
    "person name spaces": {0x00100010: ("PN", b"   ")},
    "utf-8 name": {**UTF8, 0x00100010: ("PN", "MÜLLER^JÖRG=山田^太郎".encode())},
    "bad utf-8": {**UTF8, 0x00100010: ("PN", b"M\xfcLLER")},
    "latin-1 name": {**LATIN1, 0x00100010: ("PN", "MÜLLER^JÖRG".encode("latin-1"))},
    "default charset, high bytes": {0x00100010: ("PN", b"M\xdcLLER")},
    "high bytes in CS": {0x00080060: ("CS", b"C\xc9")},
    "unknown charset": {0x00080005: ("CS", b"ISO_IR 144"), 0x00100010: ("PN", b"DOE")},
    "iso 2022": {
        0x00080005: ("CS", b"\\ISO 2022 IR 87"),
        0x00100010: ("PN", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"),
    },
    "escape in default": {0x00100010: ("PN", b"A\x1b(BB")},
    "charset with spaces": {0x00080005: ("CS", b"ISO_IR 192 "), 0x00100010: ("PN", b"DOE")},
    "empty charset": {0x00080005: ("CS", b""), 0x00100010: ("PN", b"DOE")},
    "charset with a leading space": {
        0x00080005: ("CS", b" ISO_IR 192"),
        0x00100010: ("PN", "MÜLLER".encode()),
    },
    "text before the charset": {
        **UTF8,
        0x00080001: ("LO", "MÜLLER".encode()),
        0x00100010: ("PN", "MÜLLER".encode()),
    },
    "DS exponent": {0x00180050: ("DS", b"1.5e-3\\-2E+2\\.5")},
    "DS spaces": {0x00180050: ("DS", b" 1.5 \\ 2 ")},
    "DS comma": {0x00180050: ("DS", b"1,5")},
    "DS too long": {0x00180050: ("DS", b"1.00000000000000001")},
    "DS empty item": {0x00280030: ("DS", b"0.5\\")},
    "DS nan": {0x00180050: ("DS", b"nan")},
    "IS signs": {0x00200013: ("IS", b"+12"), 0x00200011: ("IS", b" -3")},
    "IS float": {0x00200013: ("IS", b"1.0")},
    "IS huge": {0x00200013: ("IS", b"99999999999")},
    "IS multi": {0x00200013: ("IS", b"1\\2")},
    "UI padded": {0x00200052: ("UI", b"1.2.3\0")},
    "UI multi": {0x00081150: ("UI", b"1.2\\1.3")},
    "UI invalid": {0x00200052: ("UI", b"1.02.3")},
    "sop instance invalid": {0x00080018: ("UI", b"1.2.x")},
    "sop instance multi": {0x00080018: ("UI", b"1.2\\1.3")},
    "no study uid": {0x0020000D: ("UI", b"")},
    "AE spaces": {0x00080054: ("AE", b" AE1 \\AE2")},
    "DA and TM": {0x00080020: ("DA", b"20240102"), 0x00080030: ("TM", b"101112.123 ")},
    "DA bad": {0x00080020: ("DA", b"2024-01-02")},
    "DT": {0x0008002A: ("DT", b"20240102101112+0100")},
    "AS": {0x00101010: ("AS", b"042Y")},
    "UT with backslash": {0x00404001: ("UT", b"a \\ b  ")},
    "ST": {0x00204000: ("LT", b"line one\r\nline two ")},
    "ST too long": {0x00081080: ("ST", b"x" * 1100)},
    "LO too long": {0x00081030: ("LO", b"x" * 70)},
    "UR": {0x00081190: ("UR", b"http://example.com/a b ")},
    "UC": {0x00189357: ("UC", b"a\\b ")},
    "US multi": {0x00280106: ("US", struct.pack("<HH", 1, 2))},
    "SS negative": {0x00189219: ("SS", struct.pack("<h", -5))},
    "UL": {0x00081161: ("UL", struct.pack("<I", 123456))},
    "SL": {0x00189180: ("SL", struct.pack("<i", -123456))},
    "FL": {0x00189087: ("FL", struct.pack("<ff", 0.1, -2.5))},
    "FD": {0x00189089: ("FD", struct.pack("<d", 1 / 3))},
    "FD nan": {0x00189089: ("FD", struct.pack("<d", float("nan")))},
    "US odd length": {0x00280106: ("US", b"\x01\x00\x02")},
    "OB small": {0x00291010: ("OB", bytes(range(200)))},
    "OB large": {0x00291010: ("OB", bytes(4000))},
    "OB at the threshold": {0x00291010: ("OB", bytes(768)), 0x00291011: ("OB", bytes(770))},
    "OB empty": {0x00291010: ("OB", b"")},
    "private creator": {0x00290010: ("LO", b"ACME"), 0x00291010: ("LO", b"private")},
    "group length": {0x00080000: ("UL", struct.pack("<I", 1234))},
    "UN": {0x00291010: ("UN", b"abcd")},
    "UN of a known tag": {0x00100010: ("UN", b"DOE^JOHN")},
    "AT": {0x00209165: ("AT", struct.pack("<HH", 0x0010, 0x0010))},
    "LUT descriptor": {0x00281101: ("US", struct.pack("<HHH", 256, 0, 16))},
    "empty values": {
        0x00100010: ("PN", b""),
        0x00100020: ("LO", b""),
        0x00200011: ("IS", b""),
        0x00180050: ("DS", b""),
        0x00280106: ("US", b""),
        0x00080020: ("DA", b""),
    },
    "number of frames": {0x00280008: ("IS", b"1")},
    "number of frames zero": {0x00280008: ("IS", b"0")},
    "number of frames too many": {0x00280008: ("IS", b"2")},
    "rows missing": {0x00280010: ("US", b"")},
    "rows zero": {0x00280010: ("US", struct.pack("<H", 0))},
    "rows as IS": {0x00280010: ("IS", b"4")},
    "samples zero": {0x00280002: ("US", struct.pack("<H", 0))},
    "odd VR bytes": {0x00100010: ("pn", b"DOE^")},
    "an indexed attribute in bytes": {0x00100010: ("OB", b"DOE^JOHN")},
    "an indexed attribute as a number": {0x00200011: ("DS", b"1.5"), 0x00200013: ("US", b"\1\0")},
    "an indexed attribute as a sequence": {0x00100020: ("SQ", b"")},
    "rows in bytes": {0x00280010: ("OW", struct.pack("<H", 4))},
    "samples in bytes": {0x00280002: ("OB", struct.pack("<H", 1))},
    "sequence, empty": {0x00081140: ("SQ", b"")},
    "sequence, empty, undefined length": {0x00081140: ("SQ*", b"")},
    "sequence of references": {
        0x00081140: (
            "SQ",
            item(_element(0x00081150, "UI", b"1.2.3\0"), _element(0x00081155, "UI", b"1.2.4\0"))
            + item(_element(0x00081150, "UI", b"1.2.3\0"), _element(0x00081155, "UI", b"1.2.5\0")),
        )
    },
    "undefined lengths": {
        0x00081140: (
            "SQ*",
            item(_element(0x00081155, "UI", b"1.2.4\0"), undefined=True)
            + item(_element(0x00081155, "UI", b"1.2.5\0")),
        )
    },
    "an empty item": {0x00081140: ("SQ", item()), 0x00081111: ("SQ*", item(undefined=True))},
    "nested sequences": {
        0x00081032: (
            "SQ",
            item(
                _element(0x00080100, "SH", b"CODE"),
                _element(0x00080104, "LO", b"Meaning "),
                _element(
                    0x0040A170, "SQ", item(_element(0x00080100, "SH", b"SUB "), undefined=True)
                ),
            ),
        )
    },
    "request attributes": {
        **UTF8,
        0x00400275: (
            "SQ",
            item(_element(0x00400009, "SH", b"SPS1"), _element(0x00401001, "SH", b"RP1 "))
            + item(_element(0x00401001, "SH", b"RP2 ")),
        ),
    },
    "request attributes, empty": {0x00400275: ("SQ", b"")},
    "request attributes, multi-valued": {
        0x00400275: ("SQ", item(_element(0x00401001, "SH", b"A\\B ")))
    },
    "bulk in an item": {
        0x00880200: (
            "SQ",
            item(
                _element(0x00280010, "US", struct.pack("<H", 4)),
                _element(0x7FE00010, "OB", bytes(2000)),
            )
            + item(_element(0x7FE00010, "OB", bytes(20))),
        )
    },
    "utf-8 in an item": {
        **UTF8,
        0x00081032: ("SQ", item(_element(0x00080104, "LO", "Lunge Größe ".encode()))),
    },
    "character set in an item": {
        0x00081032: (
            "SQ",
            item(
                _element(0x00080005, "CS", b"ISO_IR 192"),
                _element(0x00080104, "LO", "Größe".encode()),
            ),
        )
    },
    "item out of order": {
        0x00081032: (
            "SQ",
            item(_element(0x00080104, "LO", b"B "), _element(0x00080100, "SH", b"A ")),
        )
    },
    "item running past its sequence": {
        0x00081140: ("SQ", item(_element(0x00081155, "UI", b"1.2.4\0"))[:-4]),
    },
    "element running past its item": {
        0x00081140: (
            "SQ",
            struct.pack("<HHI", 0xFFFE, 0xE000, 6) + _element(0x00081155, "UI", b"1.2.4\0"),
        ),
    },
    "not an item": {0x00081140: ("SQ", _element(0x00081155, "UI", b"1.2.4\0"))},
    "item delimiter in a defined item": {0x00081140: ("SQ", item(ITEM_END))},
    "sequence delimiter in a defined sequence": {0x00081140: ("SQ", DELIMITER)},
    "UN in an item": {0x00081140: ("SQ", item(_element(0x00291010, "UN", b"ab")))},
    "encapsulated in an item": {
        0x00880200: (
            "SQ",
            item(
                struct.pack("<HH", 0x7FE0, 0x0010)
                + b"OB\0\0\xff\xff\xff\xff"
                + struct.pack("<HHI", 0xFFFE, 0xE000, 0)
                + DELIMITER
            ),
        )
    },
}


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_values_read_the_same_or_are_left_to_pydicom(tmp_path: Path, name: str) -> None:
    assert_same(tmp_path, hand_made(AWKWARD[name]), name)
    assert_same(tmp_path, hand_made(AWKWARD[name], pad=False), name)
    implicit = as_implicit(hand_made(AWKWARD[name]))
    if implicit is not None:
        assert_same(tmp_path, implicit, f"{name}, Implicit VR")


def as_implicit(data: bytes) -> bytes | None:
    """The same data set written by pydicom in Implicit VR Little Endian (None if it cannot)."""
    try:
        ds = dcmread(io.BytesIO(data), force=True)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        return factories.part10_bytes(ds)
    except Exception:
        return None


def test_implicit_vr_is_read_in_one_pass(tmp_path: Path) -> None:
    for name in ("plain", "nested sequences", "utf-8 name", "DS exponent"):
        implicit = as_implicit(hand_made(AWKWARD[name]))
        assert implicit is not None
        assert assert_same(tmp_path, implicit, name), name
    ds = factories.ct_slice()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert assert_same(tmp_path, factories.part10_bytes(ds), "ct_slice, Implicit VR")


def test_plain_values_are_read_in_one_pass(tmp_path: Path) -> None:
    quick = [
        name for name, extra in AWKWARD.items() if assert_same(tmp_path, hand_made(extra), name)
    ]
    for name in (
        "plain",
        "nested sequences",
        "request attributes",
        "bulk in an item",
        "undefined lengths",
        "utf-8 in an item",
        "utf-8 name",
        "latin-1 name",
        "DS exponent",
        "OB large",
        "FL",
        "AE spaces",
    ):
        assert name in quick, name


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("no pixels, image class", hand_made({}, pixels=None)),
        ("no pixels, document", hand_made({}, pixels=None, sop_class=EncapsulatedPDFStorage)),
        ("short pixels", hand_made({}, pixels=b"\0" * 30)),
        ("truncated pixels", hand_made({}, pixels=b"\0" * 32)[:-4]),
        ("truncated header", hand_made({})[:300]),
        ("trailing padding", hand_made({}) + _element(0xFFFCFFFC, "OB", b"\0" * 8)),
        ("trailing garbage", hand_made({}) + b"\1\2\3"),
        ("implicit syntax named", hand_made({}, syntax=ImplicitVRLittleEndian)),
        ("encapsulated named, native sent", hand_made({}, syntax=JPEGBaseline8Bit)),
        ("out of order", hand_made({})[:-40] + _element(0x00080060, "CS", b"CT") + b"\0" * 8),
        ("no preamble", hand_made({})[132:]),
        ("empty", b""),
    ],
)
def test_structure_and_refusals_are_left_to_pydicom(tmp_path: Path, name: str, data: bytes) -> None:
    assert_same(tmp_path, data, name)


def test_charset_names_are_pythons(tmp_path: Path) -> None:
    # the table's codecs exist and are the ones pydicom uses for those terms
    from pydicom.charset import python_encoding

    from archive.quickread import _CHARSETS

    for term, codec in _CHARSETS.items():
        expected = python_encoding.get(term or "ISO_IR 6", "iso8859")
        assert codecs.lookup(codec).name == codecs.lookup(expected).name, term


def test_damaged_files_read_the_same_or_are_left_to_pydicom(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes changed at random in the header of a plain file and of one with sequences."""
    sources = {
        "hand-made": hand_made(AWKWARD["nested sequences"]),
        "CT_small": Path(get_testdata_files("CT_small.dcm")[0]).read_bytes(),
    }
    rng = random.Random(14)
    for name, data in sources.items():
        header = data.index(b"\xe0\x7f\x10\x00")  # up to the pixel data
        for _ in range(150):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                damaged[rng.randrange(132, header)] = rng.randrange(256)
            assert_same(tmp_path, bytes(damaged), name)
    assert "one-pass read" not in caplog.text  # every damage was foreseen
