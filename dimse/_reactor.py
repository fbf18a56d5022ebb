"""The pause handshake between an association's reactor and its send_* calls (pynetdicom 3.0.4).

Every ``Association.send_*`` method pauses the association's reactor thread before it sends a
request, so that the reactor does not take the peer's response off the DIMSE message queue::

    sender (send_c_store)                      reactor (_run_reactor loop)
    _reactor_checkpoint.clear()                _is_paused = True
    while not _is_paused: sleep(0.0001)        _reactor_checkpoint.wait()
    send request; get_msg(block=True)          _is_paused = False
    _reactor_checkpoint.set()                  get_msg(block=False) -> _serve_request(msg)

``_is_paused`` being True does not mean that the reactor is blocked, and the handshake has two
holes. (1) The reactor sets ``_is_paused = True`` and then passes ``wait()`` at once while the
checkpoint is still set; a sender that clears it in between sees True and goes ahead. (2) After
a send, ``set()`` wakes the blocked reactor, but ``_is_paused`` stays True until the reactor thread
actually runs; if the next ``send_c_store`` clears the checkpoint first, it sees the stale True,
and the reactor, already woken (``Event.wait`` returns once notified, whatever the flag is now),
runs on. Either way both threads read the queue; when the peer's response comes back before the
reactor's next poll, the reactor takes it, logs "Received unexpected C-STORE service message",
and the sender waits for a response that never comes until the DIMSE timeout. A fast peer (DCMTK
with TCP_NODELAY) and a busy process (other threads holding the GIL) make it likely: a 300-instance
study stalls within a few hundred C-STOREs.

`ReactorGate` replaces the association's checkpoint with a gate whose ``wait()`` marks the reactor
as running (``_is_paused = False``) under the same lock that ``clear()`` takes, and re-checks the
flag after waking. After ``clear()`` returns, ``_is_paused`` is True only while the reactor is
held at the gate, and it stays held until the sender's ``set()``: the handshake pynetdicom meant.
`steady_reactor` installs it from EVT_CONN_OPEN, before the reactor loop starts, on every
association Ferry opens (forwarding, C-MOVE sub-operations, remote queries). An association
Ferry accepts gets it from the handler of a request whose answer is sent later from another
thread on that same association (a Storage Commitment N-EVENT-REPORT): a handler runs on the
reactor thread, so nothing waits at the old checkpoint while it is replaced
(`hold_reactor_for_sends`).

A peer may also ask before it answers. With the default asynchronous operations window (one
operation invoked and one performed by each side, PS3.7 D.3.3.3), a requestor that performs
Ferry's N-EVENT-REPORT may invoke its next N-ACTION before it sends the report's response, and
pynetdicom's requestor does so whenever its application thread asks while the reactor is still
in the report's handler (``_serve_request`` marks the reactor paused around every handler).
``send_*`` takes whatever message comes next as its response: the request would be judged an
invalid response and the association aborted. `requests_kept_for_reactor` wraps such a send so
that a request arriving first is set aside and put back at the head of the queue, in order, once
the response came, where the reactor (still held) serves it when the send lets it go.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from pynetdicom import evt


class ReactorGate:
    """A drop-in for the reactor's ``threading.Event`` checkpoint, closing its two races."""

    def __init__(self, assoc: Any) -> None:
        self._assoc = assoc
        self._cond = threading.Condition(threading.Lock())
        self._open = True

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._open = False

    def wait(self, timeout: float | None = None) -> bool:
        """Held while closed (woken after a re-close, it waits on); passing marks it running."""
        with self._cond:
            passed = self._cond.wait_for(lambda: self._open, timeout)
            if passed:
                self._assoc._is_paused = False
            return passed


def steady_reactor(event: evt.Event) -> None:
    """An EVT_CONN_OPEN handler: the association's reactor pauses when a send_* call asks it to."""
    hold_reactor_for_sends(event.assoc)


def hold_reactor_for_sends(assoc: Any) -> None:
    """The association's reactor pauses when a send_* call asks it to. Call it before the
    reactor loop starts, or from a handler (on the reactor thread itself)."""
    if not isinstance(assoc._reactor_checkpoint, ReactorGate):
        assoc._reactor_checkpoint = ReactorGate(assoc)


@contextlib.contextmanager
def requests_kept_for_reactor(assoc: Any) -> Iterator[None]:
    """While a send_* call waits for its response, a request from the peer is kept, not taken
    for that response: put back at the head of the DIMSE queue when the response comes (or the
    wait ends), for the held reactor to serve next. Use on an association held at a ReactorGate.
    """
    dimse = assoc.dimse
    take = dimse.get_msg

    def get_response(block: bool = False) -> Any:
        if not block:
            return take(block)
        kept = []
        timeout = dimse.dimse_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                context_id, message = dimse.msg_queue.get(block=True, timeout=_left(deadline))
                if message is None or message.MessageIDBeingRespondedTo is not None:
                    return context_id, message
                kept.append((context_id, message))
        except queue.Empty:
            return None, None
        finally:
            _put_back_first(dimse.msg_queue, kept)

    dimse.get_msg = get_response
    try:
        yield
    finally:
        del dimse.get_msg  # the instance attribute goes: the provider's own method again


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _put_back_first(messages: Any, kept: list[Any]) -> None:
    if not kept:
        return
    with messages.mutex:
        messages.queue.extendleft(reversed(kept))
        messages.unfinished_tasks += len(kept)
        messages.not_empty.notify()
