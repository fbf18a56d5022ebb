"""Streamed responses that start only once their first bytes exist.

A stream that fails before its first chunk (a blob missing from the store, a codec that
refuses the first instance, a database gone before the first row) becomes an ordinary error
response: a status a client can act on, complete, and `Connection: close` when it is a 500.
Once bytes have gone out, a failure can only cut the response short, and the server then
closes the connection: a client sees a body shorter than its Content-Length, or chunked
encoding without its last chunk, never a shortened body that looks whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class PrimedStreamingResponse(StreamingResponse):
    """A StreamingResponse that produces its first chunk before sending the status line."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        iterator = aiter(self.body_iterator)
        try:
            first: bytes | str | memoryview | None = await anext(iterator)
        except StopAsyncIteration:
            first = None
        self.body_iterator = _chained(first, iterator)
        await super().__call__(scope, receive, send)


async def _chained(
    first: bytes | str | memoryview | None, rest: AsyncIterator[bytes | str | memoryview]
) -> AsyncIterator[bytes | str | memoryview]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk
