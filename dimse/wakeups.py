"""Wake-ups for pynetdicom's two polling loops: a C-STORE waits on nothing (pynetdicom 3.0.4).

Each association has two threads that poll. The DUL thread (`DULServiceProvider.run_reactor`)
sleeps `_run_loop_delay` (1 ms) whenever it finds nothing to do, then looks at the socket and at
the primitives to send; the association's reactor (`Association._run_reactor`) sleeps a fixed
1 ms before each look at the DIMSE message queue. Over one association every C-STORE crosses both
loops twice: the request's PDUs wait for the DUL's next look, the complete message for the
reactor's, the response for the DUL's again (a bare C-STORE response no longer does:
`dimse._direct_send`). On loopback that is about a millisecond per instance of pure waiting, a
third of what pynetdicom costs with a handler that does nothing.

Both loops call `time.sleep` of their own module. `quicken_reactors()` (library set-up, called by
the composition root) gives the two modules a `time` whose `sleep` is unchanged for every thread
except the threads of an association that `wake_on_events` prepared (an EVT_CONN_OPEN handler,
before either thread starts). For those:

- the DUL thread's sleep is a `select` on the peer's socket and on a pipe, for at most the same
  time: it returns as soon as a PDU arrives or something is put on the DUL's outgoing queue
  (`to_provider_queue`, whose `put` writes a byte to the pipe);
- the reactor's sleep waits on an event, for at most the same time, set when a complete DIMSE
  message or an ACSE primitive (a release request, an abort) is queued for it.

The loops themselves are untouched. What wakes them is the socket, the pipe or the event; the
conditions that nothing signals (the ARTIM and idle timers, kill flags, a DUL thread that died)
are looked at at least every `IDLE_WAIT_S` (20 ms) instead of every millisecond. At 1 ms, each
association's two threads woke 2,000 times a second whatever happened: during a 5 ms store the
DUL thread took the interpreter lock five times from the thread storing, and over four
associations eight threads did, each wake-up a system call, a pass of the loop and a lock
hand-over. A timer is thus seen up to 20 ms late (its own length is seconds), and an
association's end waits up to 20 ms for its DUL thread to notice. Drop this when pynetdicom's
loops block on their queues and sockets by themselves.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from types import ModuleType
from typing import Any

from pynetdicom import association as _association
from pynetdicom import dul as _dul
from pynetdicom import evt

_WAKE = "_ferry_wake"  # attribute of the association's threads that wait on their wake-up
IDLE_WAIT_S = 0.02  # the longest a woken loop sleeps: how late a timer or a kill flag is seen


class _ReactorWake:
    """The association reactor's wake-up: an event set when a message is queued for it."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.event.wait(seconds)
        self.event.clear()  # whatever was queued before this is seen by the loop's next look

    def notify(self) -> None:
        self.event.set()


class _DulWake:
    """The DUL thread's wake-up: the peer's socket readable, or a byte on the pipe."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        os.set_blocking(self.write_end, False)
        self.closed = False
        self.closing = False  # asked to close while the DUL thread may be selecting on it

    def sleep(self, seconds: float) -> None:
        if self.closing:
            self.close()
        sock = getattr(self.assoc.dul.socket, "socket", None)
        if self.closed or sock is None:
            time.sleep(seconds)
            return
        pending = getattr(sock, "pending", None)  # an SSL socket may hold decrypted bytes
        if pending is not None and pending():
            return
        try:
            ready, _, _ = select.select([sock, self.read_end], [], [], seconds)
        except (OSError, ValueError):  # the socket was closed meanwhile: the loop notices
            time.sleep(seconds)
            return
        if self.read_end in ready:
            with contextlib.suppress(OSError):
                os.read(self.read_end, 4096)

    def notify(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe is a pending wake-up already
            os.write(self.write_end, b"\0")

    def close(self) -> None:
        """Closes the pipe, on the DUL thread (or once it has ended): closed under a select, a
        descriptor's number could go to another connection meanwhile."""
        dul = self.assoc.dul
        if threading.current_thread() is not dul and dul.is_alive():
            self.closing = True
            return
        if not self.closed:
            self.closed = True
            for end in (self.read_end, self.write_end):
                with contextlib.suppress(OSError):
                    os.close(end)

    def __del__(self) -> None:
        if not self.closed:
            self.closed = True
            for end in (self.read_end, self.write_end):
                with contextlib.suppress(OSError):
                    os.close(end)


class _NotifyingQueue(queue.Queue[Any]):
    """A queue that wakes its reader's thread on every put."""

    def __init__(self, wake: _ReactorWake | _DulWake) -> None:
        super().__init__()
        self.wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wake.notify()


class _WakeableTime:
    """`time` for pynetdicom's association and DUL modules: `sleep` waits on the calling
    thread's wake-up when it has one."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def sleep(self, seconds: float) -> None:
        wake = getattr(threading.current_thread(), _WAKE, None)
        if wake is None:
            self._module.sleep(seconds)
        else:
            wake.sleep(max(seconds, IDLE_WAIT_S))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def quicken_reactors() -> None:
    """Library set-up (called by the composition root); idempotent."""
    for module in (_association, _dul):
        if not isinstance(module.time, _WakeableTime):
            module.time = _WakeableTime(time)  # type: ignore[attr-defined]


def wake_on_events(event: evt.Event) -> None:
    """An EVT_CONN_OPEN handler for accepted associations: their threads sleep until woken.

    Runs before the association's threads start, while its queues are still empty.
    """
    assoc = event.assoc
    dul = assoc.dul
    if getattr(dul, _WAKE, None) is not None:
        return
    reactor_wake, dul_wake = _ReactorWake(), _DulWake(assoc)
    assoc.dimse.msg_queue = _NotifyingQueue(reactor_wake)
    dul.to_user_queue = _NotifyingQueue(reactor_wake)
    dul.to_provider_queue = _NotifyingQueue(dul_wake)
    setattr(assoc, _WAKE, reactor_wake)
    setattr(dul, _WAKE, dul_wake)


def release_wakeups(event: evt.Event) -> None:
    """An EVT_CONN_CLOSE handler: the DUL's pipe is closed with its connection."""
    wake = getattr(event.assoc.dul, _WAKE, None)
    if isinstance(wake, _DulWake):
        wake.close()
