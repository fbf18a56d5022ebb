"""The CPU per C-STORE instance of Ferry's set-up around pynetdicom, without the store.

    .venv/bin/python bench/dimse_floor.py SETDIR --tree main=/work/main --tree branch=$PWD

For each tree in turn (rounds alternate them), a pynetdicom SCP in a process of its own with
that tree first on PYTHONPATH and the bridge's set-up (`dimse.server`'s pynetdicom options and
server class, the spool file and its File Meta, the wake-ups, the read guard, and whatever other
EVT_CONN_OPEN handlers of `dimse._messages`, `dimse._connection` and `dimse._store_requests` the
tree has); its C-STORE handler moves
the received file into the spool like Ferry's and deletes it. `storescu` sends SETDIR/warm, then
SETDIR/one (`dimse_cpu.py --make` makes both); the figure is the process's user + system CPU
(`/proc/<pid>/stat`) over SETDIR/one's instances. Without the archive's fsync and SQL, which move
with the machine's load, it shows what the bridge spends in pynetdicom and its own handler.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SETTLE_S = 0.3


def serve(port: int, spool: Path) -> None:
    here = Path(__file__).resolve().parent  # bench/dimse.py would hide the `dimse` package
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    import dimse.server  # pynetdicom's options, as the bridge sets them
    from dimse import _connection, wakeups
    from dimse.peers import no_delay
    from dimse.receiving import _spool, spool_received_data_sets

    spool_received_data_sets(spool)
    wakeups.quicken_reactors()

    def on_store(event: Any) -> int:
        target = spool / "received.dcm"
        _spool(event, target)
        target.unlink()
        return 0x0000

    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, no_delay),
        (evt.EVT_CONN_OPEN, wakeups.wake_on_events),
        (evt.EVT_CONN_CLOSE, wakeups.release_wakeups),
        (evt.EVT_CONN_OPEN, _connection.guard(262144, 60)),
        (evt.EVT_C_STORE, on_store),
    ]
    try:
        from dimse import _messages

        handlers.append((evt.EVT_CONN_OPEN, _messages.send_store_responses))
    except ImportError:  # a tree before it
        pass
    if hasattr(_connection, "decode_in_place"):
        handlers.append((evt.EVT_CONN_OPEN, _connection.decode_in_place))
    try:
        from dimse import _store_requests

        handlers.append((evt.EVT_CONN_OPEN, _store_requests.receive_store_requests))
    except ImportError:  # a tree before it
        pass
    ae = AE("FLOOR")
    ae.maximum_pdu_size = 262144
    ae.require_called_aet = False
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    # The bridge's own server class: its supported contexts, as each association copies them.
    server = ae.make_server(
        ("127.0.0.1", port), evt_handlers=handlers, server_class=dimse.server.SharedPortServer
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print("ready", flush=True)
    stopped.wait()
    server.shutdown()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _send(port: int, folder: Path) -> None:
    subprocess.run(
        ["storescu", "-aec", "FLOOR", "127.0.0.1", str(port), "+sd", str(folder)],
        check=True,
        capture_output=True,
    )


def measure(tree: Path, sets: Path, port: int) -> float:
    spool = Path(tempfile.mkdtemp(prefix="dimse-floor-"))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(spool)],
        env=env,
        cwd=tree,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        _send(port, sets / "warm")
        before = _cpu_seconds(process.pid)
        _send(port, sets / "one")
        time.sleep(SETTLE_S)
        used = _cpu_seconds(process.pid) - before
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(spool, ignore_errors=True)
    return used * 1000 / sum(1 for _ in (sets / "one").iterdir())


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", type=Path)
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=30104)
    args = parser.parse_args()
    trees = [(name, Path(path)) for name, path in (t.split("=", 1) for t in args.tree)]
    figures: dict[str, list[float]] = {name: [] for name, _ in trees}
    for _ in range(args.rounds):
        for name, tree in trees:
            figures[name].append(round(measure(tree, args.sets, args.port), 2))
            print(name, figures[name][-1], f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print(json.dumps({"ms_cpu_per_instance": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
