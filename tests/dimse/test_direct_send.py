"""C-STORE responses written by the association's reactor (dimse/_direct_send.py): the PDU is
pynetdicom's, nothing queued before it is overtaken, and bound handlers still see every PDU."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_ECHO_RQ
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage, Verification

from dimse._direct_send import DirectSend, p_data_tf_bytes
from tests import factories
from tests.dimse.conftest import Dimse


@pytest.mark.parametrize("context_id", [1, 3, 255])
@pytest.mark.parametrize("length", [0, 1, 76, 160, 4096])
def test_the_pdu_is_pynetdicoms(context_id: int, length: int) -> None:
    command_set = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((context_id, b"\x03" + command_set))
    assert p_data_tf_bytes(context_id, command_set) == P_DATA_TF(primitive).encode()


def _echo_request(message_id: int) -> bytes:
    """A C-ECHO-RQ command set as pynetdicom encodes it."""
    request = C_ECHO()
    request.MessageID = message_id
    request.AffectedSOPClassUID = Verification
    message = C_ECHO_RQ()
    message.primitive_to_message(request)
    ((_, fragment),) = next(message.encode_msg(1, 16384)).presentation_data_value_list
    return bytes(fragment[1:])


def _answered(pdu: Any) -> int:
    """The Message ID Being Responded To (0000,0120) of a response's P-DATA-TF."""
    value = bytes(pdu.presentation_data_value_items[0].presentation_data_value)[1:]
    offset = 0
    while offset < len(value):
        group, element, length = struct.unpack_from("<HHL", value, offset)
        if (group, element) == (0x0000, 0x0120):
            return int(struct.unpack_from("<H", value, offset + 8)[0])
        offset += 8 + length
    raise AssertionError("not a response")


def test_a_direct_write_never_overtakes_what_the_dul_has_queued(dimse: Dimse) -> None:
    """Real threads and sockets: the bridge answers C-ECHO requests in the order it got them."""
    answered: list[int] = []
    done = threading.Event()

    def on_pdu(event: evt.Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            answered.append(_answered(event.pdu))
            if len(answered) == 3:
                done.set()

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", dimse.port, ae_title=dimse.ae_title, evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)]
    )
    assert assoc.is_established
    try:
        direct = DirectSend(assoc)
        (context,) = assoc.accepted_contexts
        queued = P_DATA()
        queued.presentation_data_value_list.append((context.context_id, b"\x03" + _echo_request(1)))
        with direct.lock:  # the DUL is held before it can take the request off its queue
            assoc.dul.send_pdu(queued)
            assert not direct.send_command(context.context_id, _echo_request(2))
            second = P_DATA()
            second.presentation_data_value_list.append(
                (context.context_id, b"\x03" + _echo_request(2))
            )
            assoc.dul.send_pdu(second)
        deadline = time.monotonic() + 30
        while not direct.send_command(context.context_id, _echo_request(3)):
            assert time.monotonic() < deadline, "the DUL never emptied its queue"
            time.sleep(0.001)
        assert done.wait(30)
        assert answered == [1, 2, 3]
    finally:
        assoc.release()


def _store(dimse: Dimse, count: int, handlers: list[Any] | None = None) -> list[int]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title, evt_handlers=handlers)
    assert assoc.is_established
    try:
        spec = factories.StudySpec(patient_id="DIRECT-SEND")
        return [int(assoc.send_c_store(factories.ct_slice(spec=spec)).Status) for _ in range(count)]
    finally:
        assoc.release()


def test_stores_are_answered_with_and_without_a_handler_on_sent_pdus(dimse: Dimse) -> None:
    """A handler bound to EVT_PDU_SENT sees each response: it then goes through the DUL."""
    assert _store(dimse, 20) == [0x0000] * 20
    server = dimse.bridge.servers[0]
    sent: list[Any] = []

    def on_sent(event: evt.Event) -> None:
        sent.append(event.pdu)

    server.bind(evt.EVT_PDU_SENT, on_sent)
    try:
        assert _store(dimse, 5) == [0x0000] * 5
    finally:
        server.unbind(evt.EVT_PDU_SENT, on_sent)
    responses = [pdu for pdu in sent if isinstance(pdu, P_DATA_TF)]
    assert len(responses) == 5
