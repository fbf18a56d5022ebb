"""The C-STORE encodings Ferry writes directly are the bytes pydicom and pynetdicom write."""

from __future__ import annotations

import io
import warnings

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta

from dimse import _messages

CT = "1.2.840.10008.5.1.4.1.1.2"
UIDS = [
    "2.25.329800735698586629295641978511506172918",
    "1.2.3",
    "1.2.34",
    "1." + "2" * 62,
    "1.2.840.10008.5.1.4.1.1.77.1.6",
]


@pytest.mark.parametrize("sop_instance", UIDS)
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000])
def test_file_meta_is_pydicoms(sop_instance: str, syntax: str) -> None:
    expected = io.BytesIO()
    write_file_meta_info(
        expected,
        create_file_meta(sop_class_uid=CT, sop_instance_uid=sop_instance, transfer_syntax=syntax),
    )
    assert _messages.file_meta_bytes(CT, sop_instance, syntax) == expected.getvalue()


def test_unusual_uids_take_pydicoms_path() -> None:
    odd = "1.2.03"  # a leading zero: not a valid UID component
    with warnings.catch_warnings():  # pydicom's own verdict on the value, as before
        warnings.simplefilter("ignore")
        meta = _messages._create_file_meta(
            sop_class_uid=CT, sop_instance_uid=odd, transfer_syntax=ExplicitVRLittleEndian
        )
    assert not isinstance(meta, _messages._FileMeta)
    assert meta.MediaStorageSOPInstanceUID == odd


def _response(sop_instance: str, message_id: int, status: int) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    return rsp


@pytest.mark.parametrize("sop_instance", UIDS)
@pytest.mark.parametrize(("message_id", "status"), [(1, 0x0000), (65535, 0xB000), (7, 0xA700)])
def test_store_response_is_pynetdicoms(sop_instance: str, message_id: int, status: int) -> None:
    rsp = _response(sop_instance, message_id, status)
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    (expected,) = list(message.encode_msg(3, 16384))
    assert expected.presentation_data_value_list == [
        (3, b"\x03" + _messages._bare_store_response(rsp))  # type: ignore[operator]
    ]


def test_responses_with_comments_take_pynetdicoms_path() -> None:
    rsp = _response(generate_uid(), 1, 0xC000)
    rsp.ErrorComment = "data set truncated"
    assert _messages._bare_store_response(rsp) is None
