"""Peers the tests start (DCMTK tools, pynetdicom SCPs, HTTP servers), used once they answer.

A listening socket is not an answering peer: a DICOM peer is ready when it answers an
association request (accepted or rejected, either way its protocol machine runs), an HTTP
server when it answers a request. Every test that starts a peer waits here before using it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dimse.server import LISTENER_POLL_SECONDS
from tests.dimse.conftest import DCMTK_ENV, dcmtk

READY_WAIT = 60.0  # seconds: a bound on start-up on a busy machine, not a timing assertion


class PeerDidNotStart(RuntimeError):
    """The peer exited, or did not answer within READY_WAIT."""


def _wait(answers: Callable[[], bool], what: str, process: subprocess.Popen[Any] | None) -> None:
    deadline = time.monotonic() + READY_WAIT
    while True:
        if process is not None and process.poll() is not None:
            raise PeerDidNotStart(f"{what} exited with {process.returncode}")
        if answers():
            return
        if time.monotonic() > deadline:
            raise PeerDidNotStart(f"{what} did not answer within {READY_WAIT} s")
        time.sleep(0.05)


def wait_until(
    condition: Callable[[], bool], what: str, process: subprocess.Popen[Any] | None = None
) -> None:
    """`condition` holds, polled until READY_WAIT (what another process does after it answered)."""
    _wait(condition, what, process)


def dicom_answers(port: int, ae_title: str = "ANY-SCP", tls_args: Any = None) -> bool:
    """True once the peer at `port` answers an A-ASSOCIATE-RQ with any PDU (AC, RJ, abort)."""
    answered = threading.Event()
    ae = AE("READYCHECK")
    ae.acse_timeout = ae.network_timeout = 5
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate(
            "127.0.0.1",
            port,
            ae_title=ae_title,
            tls_args=tls_args,
            evt_handlers=[(evt.EVT_PDU_RECV, lambda _event: answered.set())],
        )
    except (OSError, RuntimeError):
        return False
    if assoc.is_established:
        assoc.release()
    return answered.is_set()


def wait_until_dicom_answers(
    port: int,
    process: subprocess.Popen[Any] | None = None,
    *,
    ae_title: str = "ANY-SCP",
    tls_args: Any = None,
) -> None:
    _wait(lambda: dicom_answers(port, ae_title, tls_args), f"DICOM peer on {port}", process)


def wait_until_http_answers(url: str, process: subprocess.Popen[Any] | None = None) -> None:
    """`url` (a health check) answers with any HTTP status."""

    def answers() -> bool:
        try:
            httpx.get(url, timeout=2)
        except httpx.TransportError:
            return False
        return True

    _wait(answers, url, process)


@contextlib.contextmanager
def dcmtk_peer(tool: str, *arguments: str, port: int, ae_title: str = "ANY-SCP") -> Iterator[None]:
    """A DCMTK SCP (storescp, wlmscpfs, ...) with Nagle off, answering; stopped afterwards."""
    process = subprocess.Popen(
        [dcmtk(tool), *arguments],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_dicom_answers(port, process, ae_title=ae_title)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def storescp(folder: Path, port: int, *options: str, ae_title: str = "STORESCP") -> Iterator[Path]:
    """DCMTK's storescp writing what it receives to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    arguments = ["-aet", ae_title, "-od", str(folder), *options, str(port)]
    with dcmtk_peer("storescp", *arguments, port=port, ae_title=ae_title):
        yield folder


def start_scp(
    ae: AE, port: int, handlers: Sequence[tuple[evt.EventType, Any]] = (), **options: Any
) -> Any:
    """`ae.start_server` on loopback, returned once it answers (shut it down when done).

    A TLS server (`ssl_context` among the options) may insist on client certificates; for it,
    an accepted TCP connection is the answer looked for.
    """
    # `ae.start_server(block=False)` as pynetdicom does it, but its accept loop looks up every
    # 0.05 s rather than every 0.5 s: a test's peer stops as soon as the test is done.
    server = ae.make_server(
        ("127.0.0.1", port),
        evt_handlers=list(handlers),
        server_class=ThreadedAssociationServer,
        **options,
    )
    threading.Thread(
        target=server.serve_forever, args=(LISTENER_POLL_SECONDS,), daemon=True
    ).start()
    ae._servers.append(server)  # what start_server does: the AE's shutdown stops it too
    try:
        if "ssl_context" in options:
            _wait(lambda: _accepts(port), f"TLS peer on {port}", None)
        else:
            wait_until_dicom_answers(port, ae_title=ae.ae_title)
    except BaseException:
        server.shutdown()
        raise
    return server


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True
