"""Guards on each accepted DICOM connection that pynetdicom leaves to its user (PS3.8 9, D.1).

pynetdicom reads whatever length a PDU header claims and blocks without a timeout on a peer
that stops mid-PDU, and an association aborted mid-C-STORE leaves its partly received data
set in the system's temporary folder. One misbehaving peer must cost Ferry neither memory,
nor an association slot for ever, nor disk.

pynetdicom also reads a PDU's body 4,096 bytes at a time (`AssociationSocket.recv`): 64 calls
for one 262,144-byte P-DATA-TF, each a system call, a bytearray extension and a release and
re-take of the interpreter lock, which under several associations waits behind the other
threads every time. The body is read here instead, into one buffer of the PDU's length, as much
as the socket holds per call, after the header (the DUL's `_read_pdu_data` is replaced by one
that makes the same reads, checks and events, without joining header and body by a copy).

pynetdicom then copies every byte of a P-DATA-TF four more times before it reaches the spool
file: the PDU into `bytes` (`DULServiceProvider._decode_pdu`), its items' part (`PDU.decode`),
each PDV's value (`P_DATA_TF._generate_items`) and the value past its message control header
(`DIMSEMessage.decode_msg`), 2 MB of copying and allocation for a 525 KB instance.
`decode_in_place` gives the DUL a `_decode_pdu` that makes the same P-DATA-TF with each PDV's value
a view into the received PDU, so the only copy left is the write to the file; a malformed item
raises, as pynetdicom's does, and the DUL answers it the same way (A-ABORT). Other PDUs, and every
PDU while an EVT_DATA_RECV or EVT_PDU_RECV handler is bound (they are given the bytes), take
pynetdicom's own decoding. Drop it when pynetdicom decodes P-DATA-TF without copying the values.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu import P_DATA_TF as PDataTF
from pynetdicom.pdu_items import PresentationDataValueItem

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
_PDU_TYPES = range(0x01, 0x08)  # A-ASSOCIATE-RQ … A-ABORT (PS3.8 9.3.1)
# Other PDUs (an A-ASSOCIATE-RQ with many contexts is the largest) stay far below this.
OTHER_PDU_LIMIT = 1 << 20
# A-ABORT (PS3.8 9.3.8): source 2 = service provider, reason 6 = invalid PDU parameter value.
_ABORT_INVALID_PDU = struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 2, 6)
_PDV_HEADER = struct.Struct(">LB")  # item length, presentation context ID (PS3.8 9.3.5.1)


class _LimitedReads:
    """Wraps the DUL's reads: a header, then its body. A body longer than allowed is not read.

    The peer gets an A-ABORT, and the DUL an empty read, which it treats as a closed
    connection (the association then ends as aborted).
    """

    def __init__(self, association_socket: Any, max_pdu: int) -> None:
        self.association_socket = association_socket
        self.read = association_socket.recv
        self.max_pdu = max_pdu
        self.expecting_header = True
        self.refused = False

    def recv(self, nr_bytes: int) -> bytearray:
        if self.refused:
            return bytearray()
        if not self.expecting_header:
            self.expecting_header = True
            return self._read_body(nr_bytes)
        header = self.read(nr_bytes)
        if len(header) == 6:
            pdu_type, _, length = struct.unpack(">BBL", header)
            limit = self.max_pdu if pdu_type == P_DATA_TF else OTHER_PDU_LIMIT
            if self.max_pdu and length > limit:
                self._refuse(pdu_type, length, limit)
            self.expecting_header = False
        return header  # type: ignore[no-any-return]

    def _read_body(self, nr_bytes: int, header: bytes | bytearray = b"") -> bytearray:
        """`nr_bytes` read into one buffer after `header`, as much per call as the socket holds;
        fewer if the peer closes first (the DUL then sees a short PDU, as with its own reads)."""
        sock = self.association_socket.socket
        start = len(header)
        body = bytearray(start + nr_bytes)
        body[:start] = header
        view = memoryview(body)
        read = start
        end = start + nr_bytes
        while read < end:
            got = sock.recv_into(view[read:], end - read)
            if not got:
                del view
                del body[read:]
                break
            read += got
        return body

    def read_pdu_data(self, dul: Any) -> None:
        """The DUL's `_read_pdu_data` (pynetdicom 3.0.4): the same reads, checks and events, with
        the header and body read into one buffer, not joined by copying the body once more."""
        events = dul.event_queue
        try:
            header = self.recv(6)
            if len(header) != 6:
                events.put("Evt17")  # transport connection closed
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type not in _PDU_TYPES:
                log.error("Unknown PDU type received %#04x", pdu_type)
                events.put("Evt19")  # unrecognised or invalid PDU
                return
            self.expecting_header = True
            pdu_bytes = bytearray(header) if self.refused else self._read_body(length, header)
        except (OSError, TimeoutError):
            log.error("Connection closed before the entire PDU was received")
            events.put("Evt17")
            return
        if len(pdu_bytes) != 6 + length:
            events.put("Evt17")
            return
        try:
            pdu, event = dul._decode_pdu(pdu_bytes)
            events.put(event)
        except Exception:
            log.exception("Unable to decode the received PDU data")
            events.put("Evt19")
            return
        dul._recv_pdu.put(pdu)

    def _refuse(self, pdu_type: int, length: int, limit: int) -> None:
        log.warning(
            "PDU type %#04x of %d bytes, over the limit of %d: aborted", pdu_type, length, limit
        )
        self.refused = True
        with contextlib.suppress(OSError):
            self.association_socket.send(_ABORT_INVALID_PDU)


def guard(max_pdu: int, network_timeout: float) -> Any:
    """An EVT_CONN_OPEN handler: a timeout on every read and write, a limit on PDU lengths.

    Bound before the association starts reading, so the DUL only ever reads through it.
    """

    def on_open(event: evt.Event) -> None:
        association_socket = event.assoc.dul.socket
        sock = getattr(association_socket, "socket", None)
        if association_socket is None or sock is None:
            return
        with contextlib.suppress(OSError):
            sock.settimeout(network_timeout)
        reads = _LimitedReads(association_socket, max_pdu)
        association_socket.recv = reads.recv
        dul = event.assoc.dul
        dul._read_pdu_data = lambda: reads.read_pdu_data(dul)

    return on_open


def discard_partial_data_set(event: evt.Event) -> None:
    """Removes the temporary file of a C-STORE data set whose association ended mid-transfer."""
    message = getattr(getattr(event.assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    with contextlib.suppress(OSError):
        partial.close()
    Path(partial.name).unlink(missing_ok=True)


def decode_in_place(event: evt.Event) -> None:
    """An EVT_CONN_OPEN handler: P-DATA-TF values are views into the PDU read, not copies."""
    assoc = event.assoc
    dul = assoc.dul
    decode_pdu = dul._decode_pdu

    def decode(bytestream: bytearray) -> tuple[Any, str]:
        if (
            bytestream[:1] != b"\x04"
            or assoc.get_handlers(evt.EVT_DATA_RECV)
            or assoc.get_handlers(evt.EVT_PDU_RECV)
        ):
            return decode_pdu(bytestream)
        view = memoryview(bytestream)
        pdu = PDataTF()
        items = pdu.presentation_data_value_items
        offset, end = 6, len(bytestream)
        while offset < end:
            length, context_id = _PDV_HEADER.unpack_from(bytestream, offset)
            if length < 1 or offset + 4 + length > end:
                raise ValueError(f"a PDV item of {length} bytes runs past its P-DATA-TF")
            item = PresentationDataValueItem()
            item.presentation_context_id = context_id
            value = view[offset + 5 : offset + 4 + length]  # a view: decode_msg only slices it
            item.presentation_data_value = value  # type: ignore[assignment]
            items.append(item)
            offset += 4 + length
        return pdu, "Evt10"

    dul._decode_pdu = decode
