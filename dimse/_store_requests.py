"""A C-STORE request's command set read without pydicom (pynetdicom 3.0.4, PS3.7 9.3.1.1, E.1).

For each message it receives, pynetdicom decodes the command set into a pydicom `Dataset`
(`DIMSEMessage.decode_msg`), reads four of its values there (each converted and validated on
first access), and once the data set has arrived copies every element into the request
primitive (`message_to_primitive`): about 0.15–0.3 ms of the DUL thread per C-STORE, for seven
short elements.

`receive_store_requests` (an EVT_CONN_OPEN handler for accepted associations) gives the
association's DIMSE provider a `receive_primitive` that reads the common C-STORE-RQ itself: one
command set in one fragment, its seven elements exactly (Command Group Length, Affected SOP
Class UID, Command Field, Message ID, Priority, Command Data Set Type, Affected SOP Instance
UID), in order, with plain valid UIDs and a data set to follow. The request primitive is built
with pynetdicom's own setters (same values, same checks), the data set is written to the file
pynetdicom would have made (the module's `NamedTemporaryFile`, preamble and File Meta written
by the module's own `write_file_meta_info` and `create_file_meta`), and the complete request is
queued for the reactor as pynetdicom queues it. Anything else takes pynetdicom's path: another
message or command set, a Move Originator, a setter that refuses a value, data sets held in
memory (`STORE_RECV_CHUNKED_DATASET` off), a bound EVT_DIMSE_RECV handler (it is given the
decoded message); and if a command fragment arrives while a data set is being received, the
request is first turned into the `C_STORE_RQ` message pynetdicom would hold at that point, which
then carries on. `tests/dimse/test_store_requests.py` holds the primitive and the file against
pynetdicom's. Drop it when pynetdicom decodes command sets without a pydicom Dataset.
"""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from pynetdicom import _config, dimse_messages, evt
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dimse._messages import plain_uid

# Looked up on each use: the bridge's set-up replaces its NamedTemporaryFile and File Meta writers.
_library: Any = dimse_messages
_ELEMENT = struct.Struct("<HHL")
_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
# (element, value length or None for a UID) of a C-STORE-RQ without a Move Originator, in order.
_LAYOUT = (
    (0x0000, 4),  # Command Group Length
    (0x0002, None),  # Affected SOP Class UID
    (0x0100, 2),  # Command Field
    (0x0110, 2),  # Message ID
    (0x0700, 2),  # Priority
    (0x0800, 2),  # Command Data Set Type
    (0x1000, None),  # Affected SOP Instance UID
)


def read_store_request(command_set: bytes) -> tuple[str, int, int, str] | None:
    """(SOP Class UID, Message ID, Priority, SOP Instance UID) of a plain C-STORE-RQ command
    set with a data set to follow, as pydicom reads them; None for anything else."""
    values: list[Any] = []
    offset, end = 0, len(command_set)
    for element, length in _LAYOUT:
        if offset + 8 > end:
            return None
        group, found, size = _ELEMENT.unpack_from(command_set, offset)
        offset += 8
        if group != 0x0000 or found != element or offset + size > end:
            return None
        raw = command_set[offset : offset + size]
        offset += size
        if length is None:
            uid = _uid(raw)
            if uid is None:
                return None
            values.append(uid)
        elif size != length:
            return None
        else:
            values.append(struct.unpack("<L" if length == 4 else "<H", raw)[0])
    _, sop_class, field, message_id, priority, data_set_type, sop_instance = values
    if offset != end or field != _C_STORE_RQ or data_set_type == _NO_DATA_SET:
        return None
    return sop_class, message_id, priority, sop_instance


def _uid(raw: bytes) -> str | None:
    """pydicom's reading of a UI value (trailing NULs and spaces dropped), if a plain UID."""
    try:
        value = raw.decode("ascii").rstrip("\0 ")
    except UnicodeDecodeError:
        return None
    return value if plain_uid(value) else None


def request_primitive(
    context_id: int, sop_class: str, message_id: int, priority: int, sop_instance: str
) -> C_STORE | None:
    """The request as `message_to_primitive` sets it (in the elements' order), before its data
    set; None if one of pynetdicom's setters refuses a value."""
    request = C_STORE()
    try:
        request.AffectedSOPClassUID = UID(sop_class)
        request.MessageID = message_id
        request.Priority = priority
        request.AffectedSOPInstanceUID = UID(sop_instance)
    except (ValueError, TypeError):
        return None
    request._context_id = context_id
    return request


class StoreRequest:
    """A C-STORE-RQ whose data set is being received: what `DIMSEMessage` holds meanwhile
    (`_data_set_file` is where `_connection.discard_partial_data_set` finds it)."""

    __slots__ = ("_data_set_file", "_data_set_path", "command_set_bytes", "context_id", "request")

    def __init__(self, context_id: int, command_set_bytes: bytes, request: C_STORE) -> None:
        self.context_id = context_id
        self.command_set_bytes = command_set_bytes
        self.request = request
        self._data_set_file: Any = None
        self._data_set_path: Path | None = None

    def open_file(self, transfer_syntax: str) -> None:
        """The spool file, its preamble and File Meta, as `decode_msg` writes them."""
        self._data_set_file = _library.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")
        self._data_set_path = Path(self._data_set_file.name)
        self._data_set_file.write(b"\x00" * 128)
        self._data_set_file.write(b"DICM")
        request = self.request
        _library.write_file_meta_info(
            self._data_set_file,
            _library.create_file_meta(
                sop_class_uid=request.AffectedSOPClassUID,
                sop_instance_uid=request.AffectedSOPInstanceUID,
                transfer_syntax=transfer_syntax,
            ),
        )

    def completed(self) -> C_STORE:
        request = self.request
        request.DataSet = BytesIO()
        request._dataset_path = self._data_set_path
        request._dataset_file = self._data_set_file
        return request

    def as_message(self) -> DIMSEMessage:
        """The `C_STORE_RQ` pynetdicom's `decode_msg` would hold at this point."""
        message = DIMSEMessage()
        message.encoded_command_set.write(self.command_set_bytes)
        message.context_id = self.context_id
        message.command_set = _library.decode(message.encoded_command_set, True, True)
        message.__class__ = C_STORE_RQ
        message._data_set_file = self._data_set_file
        message._data_set_path = self._data_set_path
        return message


def receive_store_requests(event: evt.Event) -> None:
    """An EVT_CONN_OPEN handler: plain C-STORE requests are read without pydicom."""
    assoc = event.assoc
    provider: Any = assoc.dimse
    receive_primitive = provider.receive_primitive

    def rest(primitive: P_DATA, start: int) -> P_DATA:
        if start == 0:
            return primitive
        remaining = P_DATA()
        remaining.presentation_data_value_list = primitive.presentation_data_value_list[start:]
        return remaining

    def start(context_id: int, fragment: Any) -> StoreRequest | None:
        if not _config.STORE_RECV_CHUNKED_DATASET or context_id not in assoc._accepted_cx:
            return None
        command_set = bytes(fragment[1:])
        values = read_store_request(command_set)
        if values is None:
            return None
        request = request_primitive(context_id, *values)
        if request is None:
            return None
        return StoreRequest(context_id, command_set, request)

    def receive(primitive: P_DATA) -> None:
        message = provider.message
        if type(primitive) is not P_DATA or assoc.get_handlers(evt.EVT_DIMSE_RECV):
            if type(message) is StoreRequest:  # a handler bound since the request began
                provider.message = message.as_message()
            receive_primitive(primitive)
            return
        for index, (context_id, fragment) in enumerate(primitive.presentation_data_value_list):
            control = fragment[0]
            if message is None:
                if index == 0 and control & 3 == 3:
                    message = start(context_id, fragment)
                if message is None:
                    receive_primitive(rest(primitive, index))
                    return
                provider.message = message
                message.open_file(assoc._accepted_cx[context_id].transfer_syntax[0])
                continue
            if type(message) is not StoreRequest:  # pynetdicom's message is being received
                receive_primitive(rest(primitive, index))
                return
            if control & 1:  # a command fragment amid the data set: pynetdicom's to handle
                provider.message = message.as_message()
                receive_primitive(rest(primitive, index))
                return
            message._data_set_file.write(fragment[1:])
            message._data_set_file.file.flush()
            if control & 2:  # the last fragment: the rest of this P-DATA is dropped, as before
                provider.message = None
                provider.msg_queue.put((message.context_id, message.completed()))
                return

    provider.receive_primitive = receive
