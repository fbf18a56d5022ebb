"""The HTTP processes of `ferry serve` share one listening socket; the least busy accepts.

uvicorn hands the socket to the event loop, which accepts every connection waiting whenever it
wakes (asyncio and libuv alike), however many it already holds: four clients connecting one
after another and staying connected were split three and one, or four and none, between the two
processes of a 2-core machine in four runs of four, and the busier process's interpreter lock
then carried three quarters of the work while the other core idled (docs/dicomweb.md, "Which
HTTP process takes a connection").

`TurnTakingServer` accepts instead, one connection at a time, by turns (`foundation.accept_turns`,
as the DIMSE bridges do): each process publishes how many connections it holds, and one holding
more than the least busy live process leaves a waiting connection to it for up to 0.2 s. The
accepted socket goes to the event loop as uvicorn's own server would give it
(`loop.connect_accepted_socket`, TLS included), to the same protocol.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from foundation.accept_turns import (
    MOST_WAIT_SECONDS,
    RECHECK_SECONDS,
    AcceptTurns,
    connection_waits,
)

log = logging.getLogger(__name__)

_ACCEPT_RETRY_SECONDS = 1.0  # asyncio's own pause when accepting fails for want of resources


class TurnTakingServer(uvicorn.Server):
    """uvicorn's server, accepting from shared sockets by turns with the other processes."""

    def __init__(self, config: uvicorn.Config, turns: AcceptTurns) -> None:
        super().__init__(config)
        self._turns = turns
        self._listeners: list[_TurnTakingListener] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if not sockets:
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        loop = asyncio.get_running_loop()
        self._turns.claim()
        self._listeners = [_TurnTakingListener(loop, sock, self) for sock in sockets]
        self.servers = self._listeners  # type: ignore[assignment]  # what shutdown closes
        self.started = True

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s: this process's count, closed connections included, and a heartbeat."""
        self.publish_turn()
        return await super().on_tick(counter)

    def held(self) -> int:
        return len(self.server_state.connections) + sum(
            listener.pending for listener in self._listeners
        )

    def protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol

    def publish_turn(self) -> int:
        held = self.held()
        self._turns.publish(held)
        return held

    def busier_than_least(self, held: int) -> bool:
        return self._turns.busier_than_least(held)

    def stop_taking_turns(self) -> None:
        """Shutting down: the other processes no longer leave connections to this one."""
        self._turns.release()


class _TurnTakingListener:
    """One shared listening socket, watched by this process's event loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, server: TurnTakingServer
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._server = server
        self._closing = False
        self._deadline = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending = 0  # accepted, not yet handed to the protocol
        sock.listen(server.config.backlog)  # what the event loop's own server would have done
        sock.setblocking(False)  # a process that loses the race must find nothing, not block
        loop.add_reader(sock.fileno(), self._connection_waits)

    def _connection_waits(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._deadline = self._loop.time() + MOST_WAIT_SECONDS
        self._take_turn()

    def _take_turn(self) -> None:
        if self._closing:
            return
        held = self._server.publish_turn()
        if self._server.busier_than_least(held) and self._loop.time() < self._deadline:
            if connection_waits(self._sock):
                self._loop.call_later(RECHECK_SECONDS, self._take_turn)
                return
        elif not self._accept():
            self._loop.call_later(_ACCEPT_RETRY_SECONDS, self._watch)
            return
        self._watch()

    def _watch(self) -> None:
        if not self._closing:
            self._loop.add_reader(self._sock.fileno(), self._connection_waits)

    def _accept(self) -> bool:
        """Accepts one waiting connection (none waiting is fine); False when out of resources."""
        try:
            connection, _address = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True  # another process took it, or the client gave up
        except OSError as error:  # out of descriptors or memory, most likely
            log.error("cannot accept an HTTP connection: %s; trying again in 1 s", error)
            return False
        connection.setblocking(False)
        self.pending += 1
        self._server.publish_turn()
        task = self._loop.create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _serve(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._server.protocol, connection, ssl=self._server.config.ssl
            )
        except Exception as error:  # a TLS handshake that failed, a client gone meanwhile
            log.debug("connection not served: %s", error)
            connection.close()
        finally:
            self.pending -= 1

    def close(self) -> None:
        """Stops accepting (uvicorn's shutdown); the connections are the protocol's to end."""
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._sock.fileno())
            self._server.stop_taking_turns()

    async def wait_closed(self) -> None:
        for task in list(self._tasks):
            task.cancel()
