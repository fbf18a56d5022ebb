"""C-STORE requests read without pydicom (dimse/_store_requests.py) queue the request primitive
and write the file pynetdicom's own reading does, for the same P-DATA primitives."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext

from dimse import _messages
from dimse._spool_file import SpoolFile
from dimse._store_requests import StoreRequest, read_store_request, receive_store_requests

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(autouse=True)
def spooled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pynetdicom's library set-up as the bridge makes it, with this test's own spool."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr(
        dimse_messages, "NamedTemporaryFile", lambda **_: SpoolFile(tmp_path, "rq-")
    )
    monkeypatch.setattr(dimse_messages, "create_file_meta", _messages._create_file_meta)
    monkeypatch.setattr(dimse_messages, "write_file_meta_info", _messages._write_file_meta_info)
    yield


def _association(ours: bool) -> Association:
    assoc = Association(AE("FERRY"), "acceptor")
    context = PresentationContext()
    context.context_id = 1
    context.abstract_syntax = CT
    context.transfer_syntax = [ExplicitVRLittleEndian]
    assoc._accepted_cx = {1: context}
    if ours:
        receive_store_requests(SimpleNamespace(assoc=assoc))  # type: ignore[arg-type]
    return assoc


def _request(**values: Any) -> C_STORE:
    request = C_STORE()
    request.MessageID = values.get("message_id", 7)
    request.AffectedSOPClassUID = values.get("sop_class", CT)
    request.AffectedSOPInstanceUID = values.get("sop_instance", generate_uid())
    request.Priority = values.get("priority", 2)
    if "originator" in values:
        request.MoveOriginatorApplicationEntityTitle = values["originator"]
        request.MoveOriginatorMessageID = 3
    request.DataSet = io.BytesIO(os.urandom(values.get("size", 40000)))
    return request


def _pdata(request: C_STORE, max_pdu: int = 16384) -> list[P_DATA]:
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return list(message.encode_msg(1, max_pdu))


def _outcome(ours: bool, primitives: list[P_DATA], bind_at: int = -1) -> dict[str, Any]:
    """What the provider queued (primitive attributes, file bytes) or raised; an EVT_DIMSE_RECV
    handler bound before primitive `bind_at`, if given, records the messages it is given."""
    assoc = _association(ours)
    provider = assoc.dimse
    seen: list[Any] = []
    try:
        for index, primitive in enumerate(primitives):
            if index == bind_at:
                assoc.bind(evt.EVT_DIMSE_RECV, lambda event: seen.append(type(event.message)))
            provider.receive_primitive(primitive)
    except Exception as error:  # compared between the two readings
        return {"raised": type(error)}
    queued = []
    while not provider.msg_queue.empty():
        context_id, request = provider.msg_queue.get()
        values = dict(vars(request))
        path, file = values.pop("_dataset_path"), values.pop("_dataset_file")
        values["_dataset"] = values["_dataset"].getvalue()
        values["types"] = {name: type(value) for name, value in values.items()}
        values["file"] = Path(path).read_bytes() if path else None
        values["file object"] = file is not None
        queued.append((context_id, type(request), values))
    pending = provider.message
    return {
        "seen": seen,
        "queued": queued,
        "pending": type(pending).__name__,
        "pending file": Path(pending._data_set_path).read_bytes() if pending else None,
    }


def _same(primitives: Callable[[], list[P_DATA]], bind_at: int = -1) -> dict[str, Any]:
    made = primitives()
    theirs, ours = _outcome(False, made, bind_at), _outcome(True, made, bind_at)
    if ours.get("pending") == "StoreRequest":
        ours["pending"] = "C_STORE_RQ"
    assert ours == theirs
    return ours


@pytest.mark.parametrize("size", [1, 2, 16384, 40000, 250000])
@pytest.mark.parametrize("priority", [0, 1, 2])
def test_a_request_is_queued_as_pynetdicom_queues_it(size: int, priority: int) -> None:
    outcome = _same(lambda: _pdata(_request(size=size, priority=priority)))
    ((context_id, kind, values),) = outcome["queued"]
    assert (context_id, kind, values["_priority"]) == (1, C_STORE, priority)


@pytest.mark.parametrize(
    "values",
    [
        {"sop_instance": "1." + "2" * 62},
        {"sop_instance": "1.2.3"},  # odd length: padded with a NUL
        {"message_id": 0},
        {"message_id": 65535},
        {"originator": "MOVESCU"},  # a Move Originator: pynetdicom's path
    ],
)
def test_unusual_requests_end_as_pynetdicoms(values: dict[str, Any]) -> None:
    _same(lambda: _pdata(_request(**values)))


def test_a_command_set_in_fragments_is_pynetdicoms() -> None:
    _same(lambda: _pdata(_request(), max_pdu=40))


def test_a_command_amid_the_data_set_is_handed_to_pynetdicom() -> None:
    def primitives() -> list[P_DATA]:
        first = _pdata(_request(size=40000))
        return [first[0], first[1], *_pdata(_request(size=100))]

    _same(primitives)


@pytest.mark.parametrize("bind_at", [0, 1, 2])
def test_a_handler_on_received_messages_is_given_pynetdicoms(bind_at: int) -> None:
    outcome = _same(lambda: _pdata(_request(size=40000)), bind_at)
    assert outcome["seen"] == [C_STORE_RQ]


def test_a_partial_data_set_is_where_the_association_end_finds_it() -> None:
    outcome = _same(lambda: _pdata(_request(size=40000))[:2])
    assert outcome["queued"] == []
    assert outcome["pending file"][128:132] == b"DICM"


def _command_set(request: C_STORE) -> bytes:
    return bytes(_pdata(request)[0].presentation_data_value_list[0][1][1:])


def _tamper(command_set: bytes, element: int, value: bytes) -> bytes:
    """The command set with one element's value replaced (group length left as it was)."""
    out, offset = b"", 0
    while offset < len(command_set):
        group, found, length = struct.unpack_from("<HHL", command_set, offset)
        current = command_set[offset + 8 : offset + 8 + length]
        if found == element:
            current = value
        out += struct.pack("<HHL", group, found, len(current)) + current
        offset += 8 + length
    return out


@pytest.mark.parametrize(
    ("element", "value"),
    [
        (0x1000, b"1.2.03\0"),  # not a valid UID
        (0x1000, b"1.2.3\\1.2.4"),  # two values
        (0x0002, b"1.2.\xff"),
        (0x0700, b"\x02\x00\x00\x00"),  # four bytes for a US
        (0x0800, b"\x01\x01"),  # no data set
        (0x0100, b"\x20\x00"),  # a C-FIND-RQ
    ],
)
def test_other_command_sets_are_left_to_pynetdicom(element: int, value: bytes) -> None:
    assert read_store_request(_tamper(_command_set(_request()), element, value)) is None


def test_a_plain_command_set_is_read_as_pydicom_reads_it() -> None:
    request = _request(sop_instance="1.2.3", message_id=513, priority=1)
    command_set = _command_set(request)
    assert read_store_request(command_set) == (CT, 513, 1, "1.2.3")
    assert read_store_request(command_set + b"\0" * 8) is None  # an element more
    assert read_store_request(command_set[:-2]) is None
    assert StoreRequest.__slots__  # what discard_partial_data_set reads is an attribute
