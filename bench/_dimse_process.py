"""Ferry's own code in processes of its own, for the DIMSE benchmark (bench/dimse.py).

    python bench/_dimse_process.py serve [--bridge] [--worker] [--profile PATH]
    python bench/_dimse_process.py node-rights AE_TITLE [--query] [--write]
    python bench/_dimse_process.py enqueue-forward NODE_AE STUDY_UID...

`serve` runs the DIMSE bridge and/or the job worker beside `ferry serve` (started with its DICOM
port 0, or without a worker), on the same FERRY_* environment (so the same index and blobs), until
SIGTERM; `--profile` samples every thread's Python stack meanwhile (`_StackSampler`), times the
archive calls of each C-STORE and every SQL statement, and writes them as JSON, one segment per
phase of the benchmark (SIGUSR1 ends one). `node-rights` makes sure a node row has
the rights asked for (`ferry admin add-node --query --write` sets them; an older build only
granted its institution), printing "patched" when it had to. `enqueue-forward` queues one
forwarding job per study and prints their job ids, one a line.

Run as a script, this file's folder would come first on sys.path, where bench/dimse.py and
bench/policy.py would hide the project's `dimse` and `policy` packages: it is taken off first.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from types import FrameType  # noqa: E402
from typing import Any  # noqa: E402

READY_LINE = "ready"
SAMPLE_INTERVAL_S = 0.005  # 200 Hz: the sampler takes the GIL too
WORKER_IDLE_S = 0.2
# Leaf functions where a thread waits rather than works (by file name and function).
_IDLE_LEAVES = {
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("selectors.py", "select"),
    ("socketserver.py", "serve_forever"),
    ("queue.py", "get"),
    ("ssl.py", "read"),
    ("socket.py", "accept"),
    ("_dimse_process.py", "_run"),
}
_IDLE_CALLS = (
    "sleep(",
    ".wait(",
    ".acquire(",
    ".accept(",
    "select.select([self.socket], [], [], self",
)


# -- serve -------------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    from ferry.app import build_archive, configure_libraries
    from ferry.settings import load_settings

    settings = load_settings()
    configure_libraries(settings)
    archive = build_archive(settings)
    stopped, cut = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGUSR1, lambda *_: cut.set())  # the benchmark ends a phase
    profile = _Profile(Path(args.profile), archive.engine) if args.profile else None
    stops: list[Callable[[], None]] = []
    try:
        if args.bridge:
            from dimse.server import Bridge

            bridge = Bridge(settings.dimse(), archive)
            bridge.start()
            stops.append(bridge.stop)
        if args.worker:
            worker = _forward_worker(settings, archive)
            worker.start()
            stops.append(worker.stop)
        if profile:
            profile.start()
        print(READY_LINE, flush=True)
        while not stopped.wait(0.05):
            if cut.is_set() and profile:
                cut.clear()
                profile.cut()
    finally:
        for stop in reversed(stops):
            stop()
        if profile:
            profile.stop()
        archive.engine.dispose()
    return 0


class _Profile:
    """The stack sampler and the two timers, written as one JSON segment per benchmark phase:
    SIGUSR1 ends a phase (its figures written, counters reset), SIGTERM the last one."""

    def __init__(self, path: Path, engine: Any) -> None:
        self.path = path
        self.engine = engine
        self.segments: list[dict[str, Any]] = []
        self.timing = _StoreTiming()
        self.statements = _StatementTiming(engine)
        self.sampler = _StackSampler()

    def start(self) -> None:
        self.sampler.start()

    def cut(self) -> None:
        self.segments.append(
            {
                **self.sampler.take(),
                "store_timing": self.timing.take(),
                "sql_timing": self.statements.take(),
            }
        )
        self.path.write_text(json.dumps(self.segments, indent=1))

    def stop(self) -> None:
        self.sampler.stop()
        if self.sampler.busy:
            self.cut()


def _forward_worker(settings: Any, archive: Any) -> Any:
    """The job worker `ferry serve` runs (forwarding handler included), polling more often."""
    from dimse.context import BridgeContext
    from ferry.background import build_worker

    return build_worker(
        BridgeContext(settings.dimse(), archive), settings, idle_seconds=WORKER_IDLE_S
    )


# -- node-rights and enqueue-forward ------------------------------------------------------------


def node_rights(args: argparse.Namespace) -> int:
    """Prints "patched" when the row lacked a right, "kept" when it had them all."""
    from sqlmodel import Session, select

    from ferry.database import create_database_engine
    from ferry.settings import load_settings
    from policy.models import Node

    engine = create_database_engine(load_settings())
    with Session(engine) as session:
        node = session.exec(select(Node).where(Node.ae_title == args.ae_title)).one()
        wanted = {"can_query": args.query, "can_write": args.write}
        missing = {
            name: True for name, value in wanted.items() if value and not getattr(node, name)
        }
        for name, value in missing.items():
            setattr(node, name, value)
        session.add(node)
        session.commit()
        print(f"{'patched' if missing else 'kept'} {node.pk}")
    engine.dispose()
    return 0


def enqueue_forward(args: argparse.Namespace) -> int:
    """One job per study, as an administrator's or a transfer's delivery would queue it."""
    from sqlmodel import Session, select

    from dimse.forward import enqueue_forward as enqueue
    from ferry.database import create_database_engine
    from ferry.settings import load_settings
    from foundation.clock import utc_now
    from policy.models import Node

    settings = load_settings()
    engine = create_database_engine(settings)
    with Session(engine) as session:
        node = session.exec(select(Node).where(Node.ae_title == args.node_ae)).one()
    with engine.begin() as connection:
        jobs = [
            enqueue(
                connection,
                study_uid=study_uid,
                node_pk=node.pk or 0,
                now=utc_now(),
                requested_by="bench/dimse.py",
                max_attempts=settings.forward_max_attempts,
            )
            for study_uid in args.study_uids
        ]
    print("\n".join(map(str, jobs)), flush=True)
    engine.dispose()
    return 0


# -- where the time goes -----------------------------------------------------------------------


class _StackSampler:
    """Every thread's Python stack, sampled: a poor man's py-spy (not installed here).

    Counts, per function, the samples where it was running (self) and on the stack (total), over
    the samples of threads that were working; a thread waiting in select, a lock or a queue is
    counted apart as idle. Python frames only: time inside C code shows as its calling function.
    """

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.interval = interval
        self.busy = 0
        self.idle = 0
        self.rounds = 0
        self.own: collections.Counter[str] = collections.Counter()
        self.total: collections.Counter[str] = collections.Counter()
        self.threads: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._done.wait(self.interval):
            names = {thread.ident: thread.name for thread in threading.enumerate()}
            frames = sys._current_frames()
            with self._lock:
                self.rounds += 1
                for ident, frame in frames.items():
                    if ident != me:
                        self._sample(names.get(ident, "?"), frame)

    def _sample(self, thread: str, frame: FrameType) -> None:
        if _waiting(frame):
            self.idle += 1
            return
        leaf = frame.f_code
        self.busy += 1
        self.threads[thread.split("@")[0].rstrip("-0123456789")] += 1
        self.own[_where(leaf)] += 1
        seen = set()
        current: FrameType | None = frame
        while current is not None:
            seen.add(_where(current.f_code))
            current = current.f_back
        self.total.update(seen)

    def take(self) -> dict[str, Any]:
        """The summary so far; the counts start again from zero."""
        with self._lock:
            summary = self.summary()
            self.busy = self.idle = self.rounds = 0
            for counter in (self.own, self.total, self.threads):
                counter.clear()
        return summary

    def summary(self, top: int = 40) -> dict[str, Any]:
        def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
            return [
                (name, round(100 * n / max(self.busy, 1), 1))
                for name, n in counter.most_common(top)
            ]

        return {
            "interval_s": self.interval,
            "rounds": self.rounds,
            "busy_samples": self.busy,
            "idle_samples": self.idle,
            "threads_percent": share(self.threads),
            "self_percent": share(self.own),
            "total_percent": share(self.total),
        }


def _waiting(frame: FrameType) -> bool:
    """A thread in a wait or a sleep; pynetdicom polls its sockets with sleeps between."""
    code = frame.f_code
    if (Path(code.co_filename).name, code.co_name) in _IDLE_LEAVES:
        return True
    line = linecache.getline(code.co_filename, frame.f_lineno or 0)
    return any(call in line for call in _IDLE_CALLS)


def _where(code: Any) -> str:
    path = Path(code.co_filename)
    short = "/".join(path.parts[-2:]) if "site-packages" not in path.parts else path.name
    return f"{short}:{code.co_firstlineno}:{code.co_name}"


class _StoreTiming:
    """Wall time spent in each Archive method the bridge calls per C-STORE, by wrapping them."""

    METHODS = ("store_files", "prepare", "store_prepared", "_write", "_settle_duplicates")

    def __init__(self) -> None:
        from archive.store import Archive

        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        for name in self.METHODS:
            if hasattr(Archive, name):
                setattr(Archive, name, self._timed(name, getattr(Archive, name)))

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[name] += time.perf_counter() - started
                    self.calls[name] += 1

        return timed

    def take(self) -> dict[str, Any]:
        with self._lock:
            summary = self.summary()
            self.seconds.clear()
            self.calls.clear()
        return summary

    def summary(self) -> dict[str, Any]:
        return {
            name: {
                "calls": self.calls[name],
                "seconds": round(self.seconds[name], 3),
                "ms_per_call": round(1000 * self.seconds[name] / max(self.calls[name], 1), 3),
            }
            for name in self.METHODS
            if self.calls[name]
        }


class _StatementTiming:
    """Wall time of each SQL statement the process runs, by its first words (commits apart)."""

    def __init__(self, engine: Any, top: int = 12) -> None:
        from sqlalchemy import event

        self.top = top
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._started = threading.local()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_: Any) -> None:
        self._started.at = time.perf_counter()

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self._add(" ".join(statement.split()[:4])[:60], self._started.at)

    def _add(self, key: str, started: float) -> None:
        with self._lock:
            self.seconds[key] += time.perf_counter() - started
            self.calls[key] += 1

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            summary = self.summary()
            self.seconds.clear()
            self.calls.clear()
        return summary

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "statement": key,
                "calls": self.calls[key],
                "seconds": round(seconds, 3),
                "ms_per_call": round(1000 * seconds / self.calls[key], 3),
            }
            for key, seconds in self.seconds.most_common(self.top)
        ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve")
    run.add_argument("--bridge", action="store_true")
    run.add_argument("--worker", action="store_true")
    run.add_argument("--profile", help="JSON file: sampled stacks and archive timings")
    run.set_defaults(run=serve)
    rights = commands.add_parser("node-rights")
    rights.add_argument("ae_title")
    rights.add_argument("--query", action="store_true")
    rights.add_argument("--write", action="store_true")
    rights.set_defaults(run=node_rights)
    forward = commands.add_parser("enqueue-forward")
    forward.add_argument("node_ae")
    forward.add_argument("study_uids", nargs="+")
    forward.set_defaults(run=enqueue_forward)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
