"""A bare C-STORE response written to the peer by the association's reactor itself, instead of
through the DUL thread (pynetdicom 3.0.4, PS3.8 9.3.5 and 9.2).

pynetdicom sends every P-DATA by putting it on the DUL's outgoing queue: the DUL thread wakes
(`dimse.wakeups` writes a byte to its pipe), takes a loop pass that finds the primitive, queues
the state machine's event, runs DT-1 (a P-DATA-TF PDU built and encoded from the primitive),
writes it, then takes another pass that looks at the socket before it sleeps again. For each
C-STORE that is a second thread woken, two interpreter-lock hand-overs and a few hundred lines
of Python, between the handler's return and the response leaving, while the sender waits for it.

`DirectSend`, made for each accepted association (from `_messages.send_store_responses`),
lets the reactor write a response's P-DATA-TF (one PDV, its command set's last fragment) to the
socket itself, when it is exactly what DT-1 would send at once:

- every state machine action of the DUL, and every write to the socket, is made under one lock
  (the DUL's `state_machine.do_action` and its `AssociationSocket.send` are wrapped), and the
  reactor writes under the same lock, only when the machine is in Sta6 (established, no release
  under way) and the DUL's outgoing queue is empty: nothing queued before it is still unsent
  (DT-1 takes a primitive off the queue and sends it in one action), and no PDU is cut in two;
- a TLS connection takes the queue as before (an `SSLSocket` is not to be written by one thread
  while another may be reading it), and so does every association with a handler bound to an
  event the direct write would skip (EVT_PDU_SENT, EVT_DATA_SENT, EVT_FSM_TRANSITION; the
  caller already checks EVT_DIMSE_SENT);
- the write is `AssociationSocket.send`'s own: a failed write queues Evt17 (connection closed)
  for the DUL, as when the DUL's write fails.

Drop it when pynetdicom's service user can send without its DUL thread.
"""

from __future__ import annotations

import ssl
import struct
import threading
from typing import Any

from pynetdicom import evt

_P_DATA_TF = 0x04
_LAST_COMMAND_FRAGMENT = 0x03
_ESTABLISHED = "Sta6"  # PS3.8 Table 9-10: data transfer, where DT-1 sends a P-DATA at once
_SKIPPED_EVENTS = (evt.EVT_PDU_SENT, evt.EVT_DATA_SENT, evt.EVT_FSM_TRANSITION)


def p_data_tf_bytes(context_id: int, command_set: bytes) -> bytes:
    """A P-DATA-TF PDU of one PDV: the whole command set, its last fragment (PS3.8 9.3.5, E.2)."""
    item_length = 2 + len(command_set)  # context ID, message control header, fragment
    return (
        struct.pack(
            ">BBLLBB",
            _P_DATA_TF,
            0,
            4 + item_length,
            item_length,
            context_id,
            _LAST_COMMAND_FRAGMENT,
        )
        + command_set
    )


class DirectSend:
    """The association's socket writes, the DUL's and the reactor's, one at a time."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self.lock = threading.RLock()  # the DUL's action may write the socket: taken twice
        dul = assoc.dul
        machine = dul.state_machine
        do_action = machine.do_action
        association_socket = dul.socket
        write = association_socket.send

        def locked_action(event: str) -> None:
            with self.lock:
                do_action(event)

        def locked_write(data: bytes) -> None:
            with self.lock:
                write(data)

        machine.do_action = locked_action
        association_socket.send = locked_write

    def send_command(self, context_id: int, command_set: bytes) -> bool:
        """Writes the P-DATA-TF of a message without a data set now; False if the DUL's queue
        must take it instead (nothing was written)."""
        assoc = self.assoc
        dul = assoc.dul
        association_socket = dul.socket
        if (
            association_socket is None
            or isinstance(association_socket.socket, ssl.SSLSocket)
            or any(assoc.get_handlers(event) for event in _SKIPPED_EVENTS)
        ):
            return False
        pdu = p_data_tf_bytes(context_id, command_set)
        with self.lock:
            if dul.state_machine.current_state != _ESTABLISHED or dul.to_provider_queue.queue:
                return False
            association_socket.send(pdu)
        return True
