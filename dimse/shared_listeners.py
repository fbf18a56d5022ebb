"""The DIMSE ports bound once by `ferry serve`, and whose turn it is to accept on them.

`ferry serve` binds each DIMSE port once, before it forks its further bridges
(`FERRY_DICOM_PROCESSES`), and every bridge accepts from the same listening sockets. With a
socket each (`SO_REUSEPORT`), the kernel would choose the bridge by a hash of the caller's
address and port, not by how busy the bridges are: four parallel associations were split three
and one in 7 of 14 runs counted, and the bridge with three carried three quarters of the work
under one interpreter lock while the other core waited (docs/dimse.md).

Here the least busy bridge takes the next association (`foundation.accept_turns`, which the
HTTP workers of `ferry serve` use too): every bridge wakes when a connection waits, and one
holding more associations than the least busy live bridge leaves it to that bridge.

A separately started `ferry dimse serve` still binds its own socket with `SO_REUSEPORT` and
joins the port as before (the kernel then chooses between the sockets).
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from dataclasses import dataclass

from dimse.config import DimseConfig
from foundation import accept_turns

_BACKLOG = 64


class AcceptTurns(accept_turns.AcceptTurns):
    """Each bridge's count of associations, in memory every forked bridge shares (a bridge's
    serving loop publishes it each time it looks up from its wait, every
    `dimse.server.LISTENER_POLL_SECONDS`)."""

    def __init__(self, bridges: int) -> None:
        super().__init__(bridges)
        self._held: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    def accepted(self, connection: socket.socket) -> None:
        """Counts `connection` until it is closed (or dropped)."""
        with self._lock:
            self._held.add(connection)
        self.refresh()

    def refresh(self) -> int:
        """Publishes this bridge's open associations (and that it is alive); returns them."""
        with self._lock:
            held = sum(1 for connection in list(self._held) if connection.fileno() != -1)
        self.publish(held)
        return held

    def wait_for_turn(self, listener: socket.socket) -> None:
        """Returns when this bridge may accept: it is among the least busy, the connection
        was taken by another bridge, or it waited `MOST_WAIT_SECONDS`."""
        deadline = time.monotonic() + accept_turns.MOST_WAIT_SECONDS
        while self.busier_than_least(self.refresh()) and time.monotonic() < deadline:
            time.sleep(accept_turns.RECHECK_SECONDS)
            if not accept_turns.connection_waits(listener):
                return  # taken: the caller's accept finds nothing waiting


@dataclass(frozen=True)
class SharedListeners:
    """The listening sockets by port, and the turns of the bridges accepting from them."""

    sockets: dict[int, socket.socket]
    turns: AcceptTurns


def bind_shared(config: DimseConfig, bridges: int) -> SharedListeners:
    """Binds the configured DIMSE ports for `bridges` bridges to share (see the module)."""
    sockets = {}
    for port in (config.dicom_port, config.dicom_tls_port):
        if port:
            sockets[port] = _listen(config.dicom_host, port)
    return SharedListeners(sockets, AcceptTurns(bridges))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # `ferry dimse serve` processes may join
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(_BACKLOG)
        # Several processes wait on it: whichever loses the race must find nothing, not block.
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener
