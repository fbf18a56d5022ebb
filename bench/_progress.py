"""Progress lines on stderr, stamped with the seconds since the benchmark started."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

_STARTED = time.monotonic()  # when the benchmark's modules were imported: its start


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def fill_progress(name: str, total: int) -> Callable[[int], None]:
    """A STOW-RS progress callback: instances stored so far, and the rate since it was made."""
    started = time.monotonic()

    def progress(done: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-9)
        log(f"  {name}: {done}/{total} instances stored ({rate:,.0f}/s)")

    return progress


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends a run like Ctrl-C, so that started servers are stopped."""
    raise KeyboardInterrupt
