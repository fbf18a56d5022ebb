"""Bad peers: malformed data sets, aborts mid-transfer, silence, unknown SOP classes, huge PDUs.

Each ends with nothing half-stored (no index row, no blob, no spooled file) and a bridge
that still answers the next association. Raw-socket peers speak just enough PS3.8 to misbehave.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification
from sqlalchemy import func, select

from archive.check import check_archive
from archive.models import Instance
from dimse.receiving import RECEIVING_PREFIX
from dimse.server import Bridge
from tests._incomplete import INCOMPLETE
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse, run_dcmtk
from tests.factories import StudySpec, ct_slice, part10_bytes

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, P_DATA_TF, A_ABORT = 0x01, 0x02, 0x04, 0x07
PEER_MAX_PDU = 16384
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.9"
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.9.77.1"


def _uid(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\x00" * (len(encoded) % 2)


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def associate_rq(calling: str, called: str, sop_class: str) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing one context, Explicit VR Little Endian."""
    context = _item(0x30, _uid(sop_class)) + _item(0x40, _uid(ExplicitVRLittleEndian))
    user = _item(0x51, struct.pack(">L", PEER_MAX_PDU)) + _item(
        0x52, _uid("1.2.826.0.1.3680043.9.9")
    )
    body = (
        struct.pack(">HH", 1, 0)
        + called.ljust(16).encode()
        + calling.ljust(16).encode()
        + b"\x00" * 32
        + _item(0x10, APPLICATION_CONTEXT)
        + _item(0x20, bytes([1, 0, 0, 0]) + context)
        + _item(0x50, user)
    )
    return struct.pack(">BBL", A_ASSOCIATE_RQ, 0, len(body)) + body


def p_data_tf(fragments: list[bytes], context_id: int = 1) -> bytes:
    """A P-DATA-TF PDU; each fragment starts with its message control header."""
    body = b"".join(struct.pack(">LB", len(f) + 1, context_id) + f for f in fragments)
    return struct.pack(">BBL", P_DATA_TF, 0, len(body)) + body


ABORT = struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, 0, 0)


def c_store_fragments(dataset_bytes: bytes, sop_instance_uid: str) -> list[bytes]:
    """The C-STORE-RQ command and data set as PDV fragments (control header first)."""
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = sop_instance_uid
    primitive.Priority = 2
    primitive.DataSet = BytesIO(dataset_bytes)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return [
        data
        for p_data in message.encode_msg(1, PEER_MAX_PDU)
        for _, data in p_data.presentation_data_value_list
    ]


class RawPeer:
    """A TCP peer that writes PDUs by hand and reads what comes back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_pdu(self) -> tuple[int, bytes] | None:
        """The next PDU's type and body; None once the bridge closed the connection."""
        header = self._read(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._read(length)
        return None if body is None else (pdu_type, body)

    def _read(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def associate(self, calling: str = "MODALITY", called: str = "FERRY") -> int:
        """Sends the A-ASSOCIATE-RQ; the PDU type of the answer; the announced max PDU kept."""
        self.send(associate_rq(calling, called, CTImageStorage))
        answer = self.read_pdu()
        assert answer is not None
        pdu_type, body = answer
        self.max_pdu = _announced_max_pdu(body) if pdu_type == A_ASSOCIATE_AC else 0
        return pdu_type

    def until_closed(self) -> list[int]:
        """The types of the PDUs the bridge sends until it closes the connection."""
        types = []
        while (pdu := self.read_pdu()) is not None:
            types.append(pdu[0])
        return types


def _announced_max_pdu(body: bytes) -> int:
    """Maximum Length Received from an A-ASSOCIATE-AC's User Information item."""
    position = 68  # protocol version, reserved, AE titles (echoed), reserved
    while position < len(body):
        item_type, _, length = struct.unpack(">BBH", body[position : position + 4])
        if item_type == 0x50:
            user = body[position + 4 : position + 4 + length]
            return int(struct.unpack(">L", user[4:8])[0])
        position += 4 + length
    raise AssertionError("no User Information item")


@pytest.fixture
def raw_peer(dimse: Dimse) -> Iterator[RawPeer]:
    peer = RawPeer(dimse.port)
    try:
        yield peer
    finally:
        peer.close()


def echo_ok(port: int, calling: str = "MODALITY") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="FERRY")
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == 0x0000
    finally:
        assoc.release()


def assert_nothing_stored(dimse: Dimse) -> None:
    """No index row, no blob, nothing left in the spool folder."""
    with dimse.archive.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Instance)).scalar_one() == 0
    assert list(dimse.archive.iter_blob_keys()) == []
    spool = dimse.web.settings.spool_dir
    assert not spool.exists() or list(spool.iterdir()) == []


def malformed(kind: str) -> bytes:
    """A Part 10 file whose data set is cut short or garbage."""
    ds = ct_slice(256, 256, spec=StudySpec())
    data = part10_bytes(ds)
    meta_end = len(part10_bytes_meta(ds))
    if kind == "truncated-pixels":
        return data[: len(data) - 20000]
    if kind == "truncated-header":
        return data[: meta_end + 301]
    return data[:meta_end] + bytes(range(256)) * 8


def part10_bytes_meta(ds: Dataset) -> bytes:
    """The preamble, DICM prefix and File Meta Information of `ds`'s Part 10 encoding."""
    data = part10_bytes(ds)
    group_length = struct.unpack("<L", data[140:144])[0]
    return data[: 144 + group_length]


def data_set_bytes(ds: Dataset) -> bytes:
    """The data set as a C-STORE carries it: the Part 10 encoding without preamble and meta."""
    return part10_bytes(ds)[len(part10_bytes_meta(ds)) :]


@sqlite_only
@pytest.mark.parametrize("kind", ["truncated-pixels", "truncated-header", "garbage"])
def test_a_malformed_data_set_is_refused_and_nothing_is_kept(
    dimse: Dimse, tmp_path: Path, kind: str
) -> None:
    data = malformed(kind)
    path = tmp_path / "bad.dcm"
    path.write_bytes(data)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    assert status.Status & 0xF000 in (0xA000, 0xC000)  # a failure, with its reason
    assert status.ErrorComment
    assert_nothing_stored(dimse)
    assert echo_ok(dimse.port)


def test_an_abort_mid_c_store_keeps_nothing(dimse: Dimse, raw_peer: RawPeer) -> None:
    spool = dimse.web.settings.spool_dir  # where pynetdicom writes incoming data sets
    ds = ct_slice(512, 512, spec=StudySpec())
    fragments = c_store_fragments(data_set_bytes(ds), ds.SOPInstanceUID)
    assert raw_peer.associate() == A_ASSOCIATE_AC
    command = [f for f in fragments if f[0] & 0x01]
    data = [f for f in fragments if not f[0] & 0x01]
    assert len(data) > 4
    for fragment in [*command, *data[:4]]:
        raw_peer.send(p_data_tf([fragment]))
    raw_peer.send(ABORT)
    assert raw_peer.until_closed() == []
    assert echo_ok(dimse.port)
    assert_nothing_stored(dimse)
    assert list(spool.iterdir()) == []


def receiving_files(spool: Path) -> list[Path]:
    return sorted(spool.glob(f"{RECEIVING_PREFIX}*"))


def test_a_data_set_being_received_is_spooled_in_the_data_folder_where_check_sees_it(
    dimse: Dimse, raw_peer: RawPeer
) -> None:
    """What a server killed mid-C-STORE leaves is in the archive's spool, swept by --repair."""
    spool = dimse.web.settings.spool_dir
    ds = ct_slice(512, 512, spec=StudySpec())
    fragments = c_store_fragments(data_set_bytes(ds), ds.SOPInstanceUID)
    assert raw_peer.associate() == A_ASSOCIATE_AC
    command = [f for f in fragments if f[0] & 0x01]
    data = [f for f in fragments if not f[0] & 0x01]
    for fragment in [*command, *data[:2]]:
        raw_peer.send(p_data_tf([fragment]))
    deadline = time.monotonic() + 30  # a bound on the bridge reading, not a timing assertion
    while not receiving_files(spool):
        assert time.monotonic() < deadline, "no partial data set in the spool"
        time.sleep(0.02)
    (partial,) = receiving_files(spool)
    report = check_archive(dimse.archive)
    assert partial.name in report.spooled_files and not report.consistent
    repaired = check_archive(dimse.archive, repair=True)
    assert repaired.repaired and partial.name in repaired.spooled_files
    assert receiving_files(spool) == []
    assert check_archive(dimse.archive).consistent


@pytest.fixture
def quick_bridge(dimse: Dimse) -> Iterator[Bridge]:
    """A second bridge on the same archive that gives up on silent peers within seconds."""
    settings = replace(
        dimse.web.settings,
        dicom_port=free_port(),
        dicom_acse_timeout=1,
        dicom_network_timeout=2,
    )
    bridge = Bridge(settings.dimse(), dimse.archive, clock=dimse.clock)
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


@sqlite_only
def test_a_peer_that_never_asks_to_associate_is_dropped(quick_bridge: Bridge) -> None:
    silent = RawPeer(quick_bridge.port)
    try:
        assert echo_ok(quick_bridge.port)  # served while the silent peer waits
        assert silent.until_closed() == []  # dropped after the ACSE timeout
    finally:
        silent.close()
    assert echo_ok(quick_bridge.port)


@sqlite_only
def test_a_peer_that_stops_mid_pdu_is_dropped(quick_bridge: Bridge) -> None:
    ds = ct_slice(spec=StudySpec())
    stalled = RawPeer(quick_bridge.port)
    try:
        assert stalled.associate() == A_ASSOCIATE_AC
        whole = p_data_tf(c_store_fragments(data_set_bytes(ds), ds.SOPInstanceUID)[:1])
        stalled.send(whole[:-5])  # the header promises five bytes more that never come
        assert echo_ok(quick_bridge.port)
        assert stalled.until_closed() == []  # dropped after the network timeout
    finally:
        stalled.close()
    assert echo_ok(quick_bridge.port)


@sqlite_only
def test_a_pdu_longer_than_announced_aborts_the_association(
    dimse: Dimse, raw_peer: RawPeer
) -> None:
    ds = ct_slice(512, 512, spec=StudySpec())
    dataset = data_set_bytes(ds)
    assert raw_peer.associate() == A_ASSOCIATE_AC
    assert raw_peer.max_pdu == dimse.web.settings.dicom_max_pdu
    assert len(dataset) > raw_peer.max_pdu
    command = [f for f in c_store_fragments(dataset, ds.SOPInstanceUID) if f[0] & 0x01]
    raw_peer.send(p_data_tf([*command, b"\x02" + dataset]))  # one PDU carrying everything
    assert raw_peer.until_closed() == [A_ABORT]
    assert echo_ok(dimse.port)
    assert_nothing_stored(dimse)


STORESCU_PROFILE = """
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[Private]
PresentationContext1 = {sop_class}\\Uncompressed

[[Profiles]]
[Private]
PresentationContexts = Private
"""


@sqlite_only
def test_an_unknown_sop_class_cannot_be_stored(dimse: Dimse, tmp_path: Path) -> None:
    ds = ct_slice(spec=StudySpec(), SOPClassUID=PRIVATE_SOP_CLASS)
    ds.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
    path = tmp_path / "private.dcm"
    path.write_bytes(part10_bytes(ds))
    profile = tmp_path / "storescu.cfg"  # storescu itself proposes only classes it knows
    profile.write_text(STORESCU_PROFILE.format(sop_class=PRIVATE_SOP_CLASS))
    aets = ("-aet", "MODALITY", "-aec", dimse.ae_title)
    sent = run_dcmtk(
        "storescu", "-xf", str(profile), "Private", *aets, "127.0.0.1", str(dimse.port), str(path)
    )
    assert sent.returncode != 0
    assert "presentation context" in (sent.stdout + sent.stderr).lower()
    assert_nothing_stored(dimse)
    assert echo_ok(dimse.port)


@sqlite_only
@pytest.mark.parametrize("case", INCOMPLETE)
def test_a_data_set_that_is_not_whole_is_refused_with_its_status(
    dimse: Dimse, tmp_path: Path, case: str
) -> None:
    incomplete = INCOMPLETE[case]()
    path = tmp_path / "part.dcm"
    path.write_bytes(incomplete.data)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(MultiFrameGrayscaleWordSecondaryCaptureImageStorage)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    assert status.Status == incomplete.reason
    # the byte is counted in the file pynetdicom received, whose File Meta is its own
    assert incomplete.says.rstrip("0123456789") in status.ErrorComment
    assert_nothing_stored(dimse)
