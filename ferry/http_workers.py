"""HTTP worker processes: `ferry serve` answers HTTP from several processes on one socket.

One Python process runs Python code on one core at a time, so a single process leaves every
other core idle while four clients store or retrieve. `ferry serve` therefore binds its HTTP
port once and serves it from `FERRY_HTTP_WORKERS` processes (default: one per CPU core it may
run on): itself, which also runs the DIMSE bridge and the job worker, and workers forked from it
once the app is built, which inherit the listening socket. The kernel hands each new connection
to whichever process accepts it first, so an idle process takes the next connection while a
busy one is still working.

Nothing a request relies on lives in one process's memory: users, sessions, revocation, sign-in
lockouts, jobs and the audit chain are rows in the database; signing keys are files re-read when
the folder changes; frame layouts and thumbnails are caches of immutable blobs. A worker dies
with `ferry serve` (the kernel sends it SIGKILL when its parent ends, however it ends), so a
killed server leaves no process answering on its port.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
from collections.abc import Callable

from sqlalchemy import Engine

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl(2)
_STOP_SECONDS = 15


def http_worker_count(configured: int) -> int:
    """`FERRY_HTTP_WORKERS`, or one per CPU core this process may run on when it is 0."""
    if configured > 0:
        return configured
    return max(1, len(os.sched_getaffinity(0)))


class HttpWorkers:
    """The processes beside `ferry serve`'s own HTTP server, forked to serve `listener` too.

    Forked once the app is built and before any thread starts: a worker needs no start-up of its
    own, and shares the parent's memory until either writes to it (`gc.freeze()` keeps the
    collector from touching, and so copying, every object the parent made).
    """

    def __init__(self, serve: Callable[[], None], engine: Engine, count: int) -> None:
        self.serve = serve
        self.engine = engine
        self.count = count
        self.processes: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        forking = multiprocessing.get_context("fork")
        for number in range(1, self.count):
            process = forking.Process(
                target=self._run, args=(os.getpid(),), name=f"ferry-http-{number}"
            )
            process.start()
            self.processes.append(process)

    def _run(self, parent: int) -> None:
        die_with_parent(parent)
        self.engine.dispose(close=False)  # the parent's pooled connections stay the parent's
        self.serve()

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL for any still there."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(_STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        self.processes.clear()


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the parent ends; end now if it already has (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(1)  # the parent went away before we asked
