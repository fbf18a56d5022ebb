"""Whose turn it is to accept a connection on a listening socket that several processes share.

`ferry serve` binds its HTTP port and its DIMSE ports once and forks the processes that serve
them; each waits on the same listening socket. Left to itself, the kernel wakes them all and the
first to look takes every connection waiting (asyncio and libuv accept in a loop), however busy
it is: four clients connecting one after another landed three and one, or four and none, on two
processes, and the busier process's interpreter lock then carried most of the work while the
other core waited.

Here each process publishes how many connections it holds in a slot of a small array in shared
memory (made before the fork). One holding more than the least busy live process leaves the
connection to it, and takes it itself after `MOST_WAIT_SECONDS` if nobody did (a process that
hangs or has died delays connections, never refuses them; a slot not written for
`STALE_SECONDS` is ignored). Processes holding as many as each other race; the kernel gives the
connection to one, and the others find none.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import socket
import time

MOST_WAIT_SECONDS = 0.2
RECHECK_SECONDS = 0.002
# Every process writes its slot at least every half second; one not written for this long is a
# process that is gone or hung.
STALE_SECONDS = 2.0


class AcceptTurns:
    """Each process's count of connections, in memory every forked process shares."""

    def __init__(self, processes: int) -> None:
        forking = multiprocessing.get_context("fork")
        self._pids = forking.RawArray(ctypes.c_int, processes)
        self._counts = forking.RawArray(ctypes.c_int, processes)
        self._heartbeats = forking.RawArray(ctypes.c_double, processes)
        self._claiming = forking.Lock()
        self._slot = -1

    def claim(self) -> None:
        """Takes a free slot for this process (a process calls it once, as it starts)."""
        with self._claiming:
            pid = os.getpid()
            for slot, holder in enumerate(self._pids):
                if holder in (0, pid):
                    self._pids[slot] = pid
                    self._slot = slot
                    self.publish(0)
                    return
        raise RuntimeError("more processes than the turns were made for")

    def release(self) -> None:
        if self._slot >= 0:
            with self._claiming:
                self._pids[self._slot] = 0
                self._counts[self._slot] = 0
            self._slot = -1

    def publish(self, held: int) -> None:
        """This process holds `held` connections (and is alive)."""
        if self._slot >= 0:
            self._counts[self._slot] = held
            self._heartbeats[self._slot] = time.monotonic()

    def busier_than_least(self, held: int) -> bool:
        """Whether a live process other than this one holds fewer than `held` connections."""
        now = time.monotonic()
        counts = [
            count
            for slot, (pid, count, heartbeat) in enumerate(
                zip(self._pids, self._counts, self._heartbeats, strict=True)
            )
            if slot != self._slot and pid and now - heartbeat < STALE_SECONDS
        ]
        return held > min(counts, default=1 << 30)


def connection_waits(listener: socket.socket) -> bool:
    """Whether a connection is still waiting to be accepted on `listener`."""
    return bool(select.select([listener], [], [], 0)[0])
