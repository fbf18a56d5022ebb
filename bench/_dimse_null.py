"""A pynetdicom C-STORE SCP that does nothing (PS3.4 Annex B): the library's own ceiling.

    python bench/_dimse_null.py PORT AE_TITLE COUNT_FILE [--max-pdu N]

pynetdicom as shipped (its reactors' polling untouched), with what Ferry's bridge asks of it:
every storage SOP class in every transfer syntax pynetdicom knows, the received data set written
to a file as it arrives (`STORE_RECV_CHUNKED_DATASET`), Ferry's maximum PDU and `TCP_NODELAY`.
The handler deletes the file and answers Success. How many it answered is written to COUNT_FILE
(at most every 50 ms), which the benchmark reads as the instances held. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification

WRITE_EVERY_S = 0.05


class Counter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = 0
        self.written = -1
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.value += 1

    def write(self) -> None:
        value = self.value
        if value != self.written:
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(str(value))
            os.replace(temporary, self.path)
            self.written = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("ae_title")
    parser.add_argument("count_file", type=Path)
    parser.add_argument("--max-pdu", type=int, default=262144)
    args = parser.parse_args(argv)
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    counter = Counter(args.count_file)
    counter.write()

    def on_open(event: Any) -> None:
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_store(event: Any) -> int:
        Path(event.dataset_path).unlink(missing_ok=True)
        counter.add()
        return 0x0000

    ae = AE(ae_title=args.ae_title)
    ae.maximum_pdu_size = args.max_pdu
    ae.maximum_associations = 32
    ae.require_called_aet = False
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(
        ("127.0.0.1", args.port),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_C_STORE, on_store)],
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print("ready", flush=True)
    while not stopped.wait(WRITE_EVERY_S):
        counter.write()
    server.shutdown()
    counter.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
