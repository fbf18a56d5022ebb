"""Processes forked from `ferry serve` once it has started: HTTP workers and DIMSE bridges.

One Python process runs Python code on one core at a time, so a single process leaves every
other core idle while four clients store or retrieve, over HTTP or DIMSE. `ferry serve`
therefore binds its HTTP port once and serves it from `FERRY_HTTP_WORKERS` processes, and runs
`FERRY_DICOM_PROCESSES` DIMSE bridges (each default: one per CPU core it may run on). The first
of each is `ferry serve` itself, which also runs the job worker; the others are forked from it
once the app is built, before any thread starts. An HTTP worker inherits the listening socket,
and the kernel hands each new connection to one of the processes; a bridge inherits the DIMSE
ports' listening sockets, bound after the HTTP workers are forked, and the bridge holding the
fewest associations takes the next (`dimse.shared_listeners`).

Nothing a request relies on lives in one process's memory: users, sessions, revocation, sign-in
lockouts, jobs and the audit chain are rows in the database; signing keys are files re-read when
the folder changes; frame layouts and thumbnails are caches of immutable blobs. A forked process
dies with `ferry serve` (the kernel sends it SIGKILL when its parent ends, however it ends), so
a killed server leaves no process answering on its ports. Each names itself (`ferry-http-1`,
`ferry-dimse-1`: the name `ps` and `top` show).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
from collections.abc import Callable

from sqlalchemy import Engine

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl(2)
_PR_SET_NAME = 15
_STOP_SECONDS = 15


def per_core(configured: int) -> int:
    """`configured`, or one per CPU core this process may run on when it is 0."""
    if configured > 0:
        return configured
    return max(1, len(os.sched_getaffinity(0)))


class Forks:
    """The processes beside `ferry serve`, forked from it to serve what it serves.

    Forked once the app is built and before any thread starts: a process needs no start-up of
    its own, and shares the parent's memory until either writes to it (`gc.freeze()` keeps the
    collector from touching, and so copying, every object the parent made).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.processes: list[multiprocessing.process.BaseProcess] = []

    def start(self, name: str, serve: Callable[[], None], count: int) -> None:
        """`count` processes running `serve`, named `name-1`, `name-2`, ..."""
        if count <= 0:
            return
        if threading.active_count() > 1:  # a thread's locks would be copied held, for ever
            log.warning("forking %s with %d threads running", name, threading.active_count())
        gc.collect()
        gc.freeze()
        forking = multiprocessing.get_context("fork")
        for number in range(1, count + 1):
            process = forking.Process(
                target=self._run, args=(os.getpid(), f"{name}-{number}", serve), name=name
            )
            process.start()
            self.processes.append(process)

    def _run(self, parent: int, name: str, serve: Callable[[], None]) -> None:
        die_with_parent(parent)
        name_process(name)
        self.engine.dispose(close=False)  # the parent's pooled connections stay the parent's
        serve()

    def stop(self) -> None:
        """SIGTERM (each stops gracefully), then SIGKILL for any still there."""
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


def name_process(name: str) -> None:
    """The name `ps -o comm`, `top` and /proc/<pid>/comm show (15 bytes at most; Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
