"""The reactor pause handshake (dimse/_reactor.py): a response reaches the thread waiting for it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from dimse._reactor import ReactorGate
from dimse.peers import open_association
from ferry.settings import Settings
from policy.decision import NodeFacts
from tests._peers import start_scp
from tests.conftest import free_port

ROUNDS = 3000
ECHOES = 300  # on a real association, in a busy process: a few seconds


class _Shared:
    """The one attribute of pynetdicom's Association that the handshake shares between threads."""

    _is_paused = False


def test_the_gate_holds_the_reactor_while_a_sender_waits() -> None:
    """pynetdicom 3.0.4's two sides of the handshake, line for line, around a ReactorGate."""
    assoc = _Shared()
    gate = ReactorGate(assoc)
    sending = threading.Event()
    stop = threading.Event()
    overlaps: list[int] = []

    def reactor() -> None:  # Association._run_reactor
        while not stop.is_set():
            assoc._is_paused = True
            gate.wait()
            assoc._is_paused = False
            if sending.is_set():  # here it would call dimse.get_msg and take the response
                overlaps.append(1)

    thread = threading.Thread(target=reactor, daemon=True)
    thread.start()
    for _ in range(ROUNDS):  # Association.send_c_store, back to back
        gate.clear()
        while not assoc._is_paused:
            time.sleep(0)
        sending.set()
        time.sleep(0)  # the reactor may run now: it must stay at the gate
        sending.clear()
        gate.set()
    stop.set()
    gate.set()
    thread.join(timeout=30)
    assert not overlaps


@contextmanager
def echo_peer() -> Iterator[int]:
    port = free_port()
    ae = AE("ECHOSCP")
    ae.add_supported_context(Verification)
    server = start_scp(ae, port)
    try:
        yield port
    finally:
        server.shutdown()


@contextmanager
def busy_process() -> Iterator[None]:
    """A thread that keeps the GIL busy, as a bridge under load does."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(2000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_every_answer_reaches_the_sender_on_ferrys_associations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Back-to-back requests on an association from dimse.peers, in a busy process."""
    settings = Settings(dicom_dimse_timeout=5)
    with echo_peer() as port, busy_process(), caplog.at_level(logging.WARNING, "pynetdicom"):
        node = NodeFacts(pk=1, institution_pk=1, ae_title="ECHOSCP", host="127.0.0.1", port=port)
        assoc = open_association(settings.dimse(), node, [build_context(Verification)])
        try:
            statuses = [assoc.send_c_echo().get("Status") for _ in range(ECHOES)]
        finally:
            if assoc.is_established:
                assoc.release()
    assert statuses == [0] * (ECHOES)  # None: a response the sender never got
    assert "unexpected" not in caplog.text
