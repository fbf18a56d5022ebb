"""The DUL's PDU reads that `_connection.guard` installs make the events and PDUs pynetdicom's
own `_read_pdu_data` makes, from the same bytes on a real socket."""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

from dimse import _connection

P_DATA = (
    struct.pack(">BBLLBB", 0x04, 0, 4 + 2 + 300, 2 + 300, 1, 0x02) + bytes(range(256)) + b"x" * 44
)
RELEASE_RQ = struct.pack(">BBLL", 0x05, 0, 4, 0)


def _read(sent: bytes, ours: bool, close: bool) -> tuple[list[str], list[bytes]]:
    peer, mine = socket.socketpair()
    assoc = Association(AE("FERRY"), "acceptor")
    dul = assoc.dul
    dul.socket = AssociationSocket(assoc, client_socket=mine)
    if ours:
        _connection.guard(16384, 5)(SimpleNamespace(assoc=assoc))  # type: ignore[arg-type]
    peer.sendall(sent)
    if close:
        peer.close()
    try:
        for _ in range(2):
            dul._read_pdu_data()
    finally:
        mine.close()
        if not close:
            peer.close()
    events = list(dul.event_queue.queue)
    pdus: list[Any] = list(dul._recv_pdu.queue)
    return events, [pdu.encode() for pdu in pdus]


@pytest.mark.parametrize(
    ("sent", "close"),
    [
        (P_DATA + RELEASE_RQ, False),
        (RELEASE_RQ + P_DATA, False),
        (P_DATA[:100], True),  # the peer stops mid-PDU
        (P_DATA[:3], True),  # mid-header
        (struct.pack(">BBL", 0x09, 0, 2) + b"ab" + RELEASE_RQ, False),  # an unknown type
    ],
)
def test_reads_are_pynetdicoms(sent: bytes, close: bool) -> None:
    assert _read(sent, True, close) == _read(sent, False, close)


def test_a_p_data_over_the_limit_is_not_read() -> None:
    over = struct.pack(">BBL", 0x04, 0, 20000) + b"\0" * 20000
    events, pdus = _read(over, True, True)
    assert set(events[1:]) == {"Evt17"}  # after the connection indication (Evt5)
    assert pdus == []
