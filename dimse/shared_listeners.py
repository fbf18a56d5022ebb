"""The DIMSE ports bound once by `ferry serve`, and whose turn it is to accept on them.

`ferry serve` binds each DIMSE port once, before it forks its further bridges
(`FERRY_DICOM_PROCESSES`), and every bridge accepts from the same listening sockets. With a
socket each (`SO_REUSEPORT`), the kernel would choose the bridge by a hash of the caller's
address and port, not by how busy the bridges are: four parallel associations were split three
and one in 7 of 14 runs counted, and the bridge with three carried three quarters of the work
under one interpreter lock while the other core waited (docs/dimse.md).

Here the least busy bridge takes the next association. Every bridge wakes when a connection
waits; each publishes how many associations it holds in a slot of a small array in shared
memory (made before the fork); one holding more than the least busy live bridge leaves the
connection for that bridge, and takes it itself after `_MOST_WAIT_SECONDS` if nobody did (a
bridge that hangs or has died delays associations, never refuses them). Bridges holding as many
as each other race; the kernel gives the connection to one and the others find none.

A separately started `ferry dimse serve` still binds its own socket with `SO_REUSEPORT` and
joins the port as before (the kernel then chooses between the sockets).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import socket
import threading
import time
import weakref
from dataclasses import dataclass

from dimse.config import DimseConfig

_MOST_WAIT_SECONDS = 0.2
_RECHECK_SECONDS = 0.002
# A bridge's serving loop writes its heartbeat at least every half second (socketserver's
# poll interval); a slot not written for this long is a bridge that is gone or hung.
_STALE_SECONDS = 2.0
_BACKLOG = 64


class AcceptTurns:
    """Each bridge's count of associations, in memory every forked bridge shares."""

    def __init__(self, bridges: int) -> None:
        forking = multiprocessing.get_context("fork")
        self._pids = forking.RawArray(ctypes.c_int, bridges)
        self._counts = forking.RawArray(ctypes.c_int, bridges)
        self._heartbeats = forking.RawArray(ctypes.c_double, bridges)
        self._claiming = forking.Lock()
        self._slot = -1
        self._held: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    def claim(self) -> None:
        """Takes a free slot for this process (a bridge calls it once, as it starts)."""
        with self._claiming:
            pid = os.getpid()
            for slot, holder in enumerate(self._pids):
                if holder in (0, pid):
                    self._pids[slot] = pid
                    self._slot = slot
                    self.refresh()
                    return
        raise RuntimeError("more bridges than the turns were made for")

    def release(self) -> None:
        if self._slot >= 0:
            with self._claiming:
                self._pids[self._slot] = 0
                self._counts[self._slot] = 0
            self._slot = -1

    def accepted(self, connection: socket.socket) -> None:
        """Counts `connection` until it is closed (or dropped)."""
        with self._lock:
            self._held.add(connection)
        self.refresh()

    def refresh(self) -> int:
        """Publishes this bridge's open associations (and that it is alive); returns them."""
        with self._lock:
            held = sum(1 for connection in list(self._held) if connection.fileno() != -1)
        if self._slot >= 0:
            self._counts[self._slot] = held
            self._heartbeats[self._slot] = time.monotonic()
        return held

    def wait_for_turn(self, listener: socket.socket) -> None:
        """Returns when this bridge may accept: it is among the least busy, the connection
        was taken by another bridge, or it waited `_MOST_WAIT_SECONDS`."""
        deadline = time.monotonic() + _MOST_WAIT_SECONDS
        while self.refresh() > self._least_busy_other() and time.monotonic() < deadline:
            time.sleep(_RECHECK_SECONDS)
            if not select.select([listener], [], [], 0)[0]:
                return  # taken: the caller's accept finds nothing waiting

    def _least_busy_other(self) -> int:
        now = time.monotonic()
        counts = [
            count
            for slot, (pid, count, heartbeat) in enumerate(
                zip(self._pids, self._counts, self._heartbeats, strict=True)
            )
            if slot != self._slot and pid and now - heartbeat < _STALE_SECONDS
        ]
        return min(counts, default=1 << 30)


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
