"""Connections shared out evenly between the HTTP processes of `ferry serve`.

The HTTP processes accept from one listening socket. asyncio's server accepts every connection
waiting each time the socket becomes readable, so the process that wakes first took all the
connections that arrived together: four STOW-RS clients connecting at once were all served by
one process (keep-alive then holds them there), with the other process idle and the ingest rate
held to one core's worth of Python.

`BalancedServer` accepts one connection at a time instead, and a process that already holds more
open connections than another HTTP process lets the next one pass: it stops watching the socket
for `DEFER_SECONDS` (10 ms), which the other process (woken by the same arrival) uses to take it. If
nobody has taken it by then, it accepts it itself, so a stuck or busy peer never delays a client
by more than that. Each process publishes its count of open connections in an array shared
before the fork.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DEFER_SECONDS = 0.01
_PAUSE_ON_ERROR_SECONDS = 1.0  # as asyncio's own accept loop waits when out of descriptors


class ConnectionCounts:
    """Open connections per HTTP process, in memory shared by processes forked after it."""

    def __init__(self, processes: int) -> None:
        self._counts = multiprocessing.RawArray("i", max(1, processes))
        self._next = multiprocessing.Value("i", 0)
        self.slot = -1

    def claim(self) -> None:
        """Take this process's slot (called once in each serving process)."""
        with self._next.get_lock():
            self.slot = self._next.value % len(self._counts)
            self._next.value += 1

    def publish(self, count: int) -> None:
        if self.slot >= 0:
            self._counts[self.slot] = count

    def busier_than_another(self, count: int) -> bool:
        return any(other < count for n, other in enumerate(self._counts) if n != self.slot)


def _counted(protocol: type[HttpToolsProtocol], counts: ConnectionCounts) -> type[Any]:
    """`protocol`, publishing the process's count of open connections as they open and close."""

    class Counted(protocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            counts.publish(len(self.server_state.connections))

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            counts.publish(len(self.server_state.connections))

    Counted.__name__ = protocol.__name__
    return Counted


class BalancedServer(uvicorn.Server):
    """uvicorn's server, accepting from the shared sockets one connection at a time."""

    def __init__(self, config: uvicorn.Config, counts: ConnectionCounts) -> None:
        super().__init__(config)
        self.counts = counts
        self._listening: list[socket.socket] = []
        self._connecting: set[asyncio.Task[Any]] = set()
        self._deferred = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan, and no asyncio server of its own
        if self.should_exit or not sockets:
            return
        self.counts.claim()
        config = self.config
        protocol: Any = _counted(config.http_protocol_class, self.counts)  # type: ignore[arg-type]
        create_protocol: Any = functools.partial(
            protocol, config=config, server_state=self.server_state, app_state=self.lifespan.state
        )
        loop = asyncio.get_running_loop()
        for sock in sockets:
            sock.listen(config.backlog)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._accept, sock, create_protocol)
            self._listening.append(sock)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._listening:
            loop.remove_reader(sock.fileno())
        self._listening = []
        await super().shutdown(sockets=sockets)

    def _accept(self, sock: socket.socket, create_protocol: Any) -> None:
        loop = asyncio.get_running_loop()
        held = len(self.server_state.connections) + len(self._connecting)
        if not self._deferred and self.counts.busier_than_another(held):
            self._deferred = True
            self._pause(loop, sock, create_protocol, DEFER_SECONDS)
            return
        self._deferred = False
        try:
            conn, _address = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it
        except OSError as error:  # out of descriptors, say: wait rather than spin on it
            log.error("cannot accept a connection: %s", error)
            self._pause(loop, sock, create_protocol, _PAUSE_ON_ERROR_SECONDS)
            return
        conn.setblocking(False)
        task = loop.create_task(
            loop.connect_accepted_socket(create_protocol, conn, ssl=self.config.ssl)
        )
        self._connecting.add(task)
        task.add_done_callback(functools.partial(self._connected, conn))

    def _connected(self, conn: socket.socket, task: asyncio.Task[Any]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("connection not set up: %s", task.exception())
            conn.close()

    def _pause(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        create_protocol: Any,
        seconds: float,
    ) -> None:
        loop.remove_reader(sock.fileno())
        loop.call_later(seconds, self._resume, loop, sock, create_protocol)

    def _resume(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, create_protocol: Any
    ) -> None:
        if sock in self._listening:
            loop.add_reader(sock.fileno(), self._accept, sock, create_protocol)
