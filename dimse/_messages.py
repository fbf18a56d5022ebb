"""Two small encodings pynetdicom makes with pydicom for every C-STORE, written directly
(pynetdicom 3.0.4, pydicom 3).

For each C-STORE it receives, pynetdicom builds the File Meta Information of the spooled file as
a pydicom `FileMetaDataset` and writes it with `write_file_meta_info` (on the DUL thread), and it
builds the C-STORE response's command set as a pydicom `Dataset`, encodes it once to measure the
Command Group Length and once more to send it (on the association's reactor, between the
handler's return and the next request). A few short elements each time, yet pydicom's generic
path (keyword look-ups, element objects, value validation, the writer's per-element dispatch)
costs about 0.8 ms for the first and 1 ms for the second per instance on this machine, a fifth
of what the bridge spends per instance besides storing it.

Here both are the same bytes, packed with `struct`:

- `install()` (library set-up, called with `spool_received_data_sets`) gives pynetdicom's
  `dimse_messages` module a `create_file_meta` and a `write_file_meta_info` that write the
  group for a data set being received when its three UIDs are plain valid UIDs; anything else
  (an odd UID from a peer, any other caller) goes through pydicom exactly as before, with its
  validation and its errors.
- `send_store_responses` (an EVT_CONN_OPEN handler for accepted associations) lets the
  association's DIMSE provider send a C-STORE response that carries only the required fields
  (Success or a bare status: no Error Comment, no Offending Element) as one P-DATA of its
  encoded command set, written by the reactor itself where `dimse._direct_send` allows it
  (else queued for the DUL thread); every other message, and every message while an
  EVT_DIMSE_SENT handler is bound, takes pynetdicom's own `send_msg`.

`tests/dimse/test_messages.py` holds both byte for byte against pydicom's and pynetdicom's
output. Drop this when pynetdicom encodes command sets and the File Meta without a pydicom
Dataset, or when pydicom's writer costs a few microseconds per element.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from pydicom import filewriter
from pydicom.uid import RE_VALID_UID
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    dimse_messages,
    dsutils,
    evt,
)
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dimse._direct_send import DirectSend

_UID = re.compile(RE_VALID_UID)
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_LAST_COMMAND_FRAGMENT = b"\x03"
_IMPLEMENTATION_UID = str(PYNETDICOM_IMPLEMENTATION_UID)
_IMPLEMENTATION_VERSION = PYNETDICOM_IMPLEMENTATION_VERSION


def plain_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _UID.match(value) is not None


def _ui(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\0" if len(encoded) % 2 else encoded


# -- File Meta Information (PS3.10 7.1), Explicit VR Little Endian -------------------------------


class _FileMeta:
    """What pynetdicom's `create_file_meta` is given, when it can be written directly."""

    __slots__ = ("sop_class_uid", "sop_instance_uid", "transfer_syntax")

    def __init__(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> None:
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax = transfer_syntax


def _short(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The File Meta group pynetdicom writes for a received data set (preamble and DICM not
    included), as pydicom's `write_file_meta_info` encodes it."""
    version = _IMPLEMENTATION_VERSION.encode("ascii")
    if len(version) % 2:
        version += b" "
    rest = b"".join(
        (
            struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _short(0x0002, b"UI", _ui(sop_class_uid)),
            _short(0x0003, b"UI", _ui(sop_instance_uid)),
            _short(0x0010, b"UI", _ui(transfer_syntax)),
            _short(0x0012, b"UI", _ui(_IMPLEMENTATION_UID)),
            _short(0x0013, b"SH", version),
        )
    )
    return _short(0x0000, b"UL", struct.pack("<L", len(rest))) + rest


_pydicom_create_file_meta = dsutils.create_file_meta
_pydicom_write_file_meta_info = filewriter.write_file_meta_info


def _create_file_meta(
    *, sop_class_uid: Any, sop_instance_uid: Any, transfer_syntax: Any, **options: Any
) -> Any:
    if not options and all(
        plain_uid(uid) for uid in (sop_class_uid, sop_instance_uid, transfer_syntax)
    ):
        return _FileMeta(str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax))
    return _pydicom_create_file_meta(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax=transfer_syntax,
        **options,
    )


def _write_file_meta_info(fp: Any, file_meta: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(file_meta, _FileMeta):
        fp.write(
            file_meta_bytes(
                file_meta.sop_class_uid, file_meta.sop_instance_uid, file_meta.transfer_syntax
            )
        )
        return
    _pydicom_write_file_meta_info(fp, file_meta, *args, **kwargs)


def install() -> None:
    """Library set-up: pynetdicom's received data sets get their File Meta written directly."""
    setattr(dimse_messages, "create_file_meta", _create_file_meta)  # noqa: B010 (not exported)
    setattr(dimse_messages, "write_file_meta_info", _write_file_meta_info)  # noqa: B010


# -- C-STORE-RSP command set (PS3.7 9.3.1.2), Implicit VR Little Endian --------------------------


def _element(group_element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, group_element, len(value)) + value


def store_response_bytes(
    sop_class_uid: str, message_id: int, status: int, sop_instance_uid: str
) -> bytes:
    """A C-STORE-RSP command set with its required fields, as pynetdicom encodes it."""
    rest = b"".join(
        (
            _element(0x0002, _ui(sop_class_uid)),
            _element(0x0100, struct.pack("<H", _C_STORE_RSP)),
            _element(0x0120, struct.pack("<H", message_id)),
            _element(0x0800, struct.pack("<H", _NO_DATA_SET)),
            _element(0x0900, struct.pack("<H", status)),
            _element(0x1000, _ui(sop_instance_uid)),
        )
    )
    return _element(0x0000, struct.pack("<L", len(rest))) + rest


def _bare_store_response(primitive: Any) -> bytes | None:
    """The encoded command set of a C-STORE response with only its required fields, else None."""
    if type(primitive) is not C_STORE:
        return None
    message_id, status = primitive.MessageIDBeingRespondedTo, primitive.Status
    sop_class, sop_instance = primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID
    if (
        not isinstance(message_id, int)
        or not isinstance(status, int)
        or not 0 <= message_id <= 0xFFFF
        or not 0 <= status <= 0xFFFF
        or primitive.ErrorComment is not None
        or primitive.OffendingElement is not None
        or not plain_uid(sop_class)
        or not plain_uid(sop_instance)
    ):
        return None
    return store_response_bytes(str(sop_class), message_id, status, str(sop_instance))


def send_store_responses(event: evt.Event) -> None:
    """An EVT_CONN_OPEN handler: bare C-STORE responses skip pydicom's encoder, and are written
    to the socket by the reactor where that is safe (`dimse._direct_send`)."""
    assoc = event.assoc
    provider = assoc.dimse
    send_msg = provider.send_msg
    direct = DirectSend(assoc) if assoc.dul.socket is not None else None

    def send(primitive: Any, context_id: int) -> None:
        encoded = _bare_store_response(primitive)
        limit = provider.maximum_pdu_size
        if (
            encoded is None
            or (limit and len(encoded) + 6 > limit)
            or assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            send_msg(primitive, context_id)
            return
        if direct is not None and direct.send_command(context_id, encoded):
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + encoded))
        provider.dul.send_pdu(pdata)

    provider.send_msg = send  # type: ignore[method-assign]
