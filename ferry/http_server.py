"""The HTTP server: uvicorn with httptools, and limits on how a request's head may arrive.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client takes to
send a request's headers, nor their size with httptools (`h11_max_incomplete_event_size` is
h11's alone). A connection that dribbles its headers would hold a slot for ever, and a 1 MiB
header would be parsed and kept. `LimitedHttpToolsProtocol` adds both limits:

- a timer runs from the first byte of a request (or the connection's start) until its headers
  are complete; when it fires the client gets 408 and the connection ends (RFC 9110 15.5.9);
- more than `max_header_bytes` of request line and headers answers 431 (RFC 6585 section 5).

Both refusals half-close and read what the client still sends for a moment before closing
(a lingering close), so the client reads the answer instead of a reset.

On clear-text connections the protocol also offers the ASGI zero-copy send extension and
Ferry's `ferry.file_parts` beside it (`ferry.zero_copy`): WADO-RS sends stored instances from
their files with `os.sendfile`.

A request body piece goes to the app as the bytes object httptools made of it, when nothing
else is waiting to be read: uvicorn's own `on_body` copies it into a bytearray, which `receive`
copies again into bytes, so every byte of a STOW-RS upload was copied twice more (and the fresh
buffers cost page faults besides).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import is_ssl

from ferry.settings import Settings
from ferry.zero_copy import FILE_PARTS, ZERO_COPY_SEND, ZeroCopySender

_LINGER_SECONDS = 2.0
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a header size cap."""

    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        self._message_started = False
        self._header_bytes = 0
        self._refused = False
        self._zero_copy: ZeroCopySender | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not is_ssl(transport) and transport.get_extra_info("socket") is not None:
            self._zero_copy = ZeroCopySender(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)
        if self._zero_copy is not None:
            self._zero_copy.connection_lost()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and drop until the close
        began_before = self._message_started
        super().data_received(data)
        # A chunk in which a message began may also end the previous one's body: only later
        # chunks are counted whole (a finished head is measured exactly when it completes).
        if self._awaiting_headers and began_before:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "request headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._zero_copy is not None:
            self.scope["extensions"] = {ZERO_COPY_SEND: {}, FILE_PARTS: {}}
        self._awaiting_headers = True
        self._message_started = True
        self._header_bytes = 0
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._message_started = False
        self._cancel_header_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._refuse(431, "request headers too large")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        cycle = self.cycle
        if cycle.body or cycle.response_complete or self.parser.should_upgrade():
            super().on_body(body)
            return
        # The body piece as httptools made it: uvicorn would copy it into its bytearray, and
        # `receive` copy that again into bytes (`bytes()` of a bytes object is that object).
        cycle.body = body  # type: ignore[assignment]
        if len(body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if self._zero_copy is not None:
            app = _sending_with(app, self._zero_copy.sending(cycle))
        super()._start_asgi_task(cycle, app)

    def _start_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            if self._message_started:
                self._refuse(408, "request headers not received in time")
            else:  # an idle connection that never started a request: nothing to answer
                self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer, half-close, and close after a moment of discarding what still arrives."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._cancel_header_timer()
        self.logger.warning("%s from %s: %s", status, self._peer(), message)
        body = message.encode("ascii")
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: text/plain; charset=utf-8\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"


def _sending_with(app: ASGI3Application, send: ASGISendCallable) -> ASGI3Application:
    """`app`, its messages going to `send` (the cycle's own send, with zero-copy messages)."""

    async def run(scope: Scope, receive: ASGIReceiveCallable, _send: ASGISendCallable) -> None:
        await app(scope, receive, send)

    return run


def protocol_for(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with this configuration's limits (uvicorn instantiates it per socket)."""
    limits = {
        "header_timeout": float(settings.http_header_timeout),
        "max_header_bytes": settings.http_max_header_bytes,
    }
    return type("FerryHttpProtocol", (LimitedHttpToolsProtocol,), limits)


def log_config() -> dict[str, Any]:
    """uvicorn's logging, each line naming its process: `ferry serve` runs several."""
    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = formatter["fmt"].replace(
            "%(levelprefix)s", "%(levelprefix)s [%(process)d]"
        )
    return config


def server_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration `ferry serve` runs (and the tests run) for an app."""
    options.setdefault("log_config", log_config())
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        http=protocol_for(settings),
        **options,
    )
