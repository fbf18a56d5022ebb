"""CPU time per instance of `Archive.store_files`, by phase, for source trees taken in turn.

The archive's store path alone, in one process and one thread (no DIMSE, no HTTP): spooled
copies of a set's files stored one per call, as the DIMSE bridge stores each C-STORE, into a
fresh SQLite index and blob folder (blobs flushed, as `FERRY_BLOB_FSYNC=true`). The first 10
warm it (statements compiled, modules loaded); over the rest, each phase's thread CPU time
(`time.thread_time`) and wall time per instance. Each round runs every tree in a new process
with that tree first on `sys.path`; the trees alternate, so a change of load weighs on all.

    .venv/bin/python bench/store_cpu.py SETDIR --tree main=/path/to/main --tree branch=.

SETDIR: `bench/dimse_cpu.py --make 400 SETDIR` (its `one/` folder is used); `--rounds` (3),
`--count` (300 measured after the 10).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

PHASES = (
    "store_files",
    "prepare",
    "store_prepared",
    "_read_places",
    "_owned_elsewhere",
    "_settle_duplicates",
    "_write",
    "store",
    "_commit",
)
WARM = 10


def measure(tree: str, files: list[Path]) -> dict[str, list[float]]:
    """In this process: {phase: [wall ms, CPU ms] per instance} of the tree on sys.path."""
    import functools
    import shutil
    import tempfile
    import time

    sys.path.insert(0, tree)
    from archive.blobstore import FilesystemBlobStore
    from archive.store import Archive
    from foundation.database import create_database_engine, migrate

    folder = Path(tempfile.mkdtemp())
    engine = create_database_engine(f"sqlite:///{folder}/index.sqlite")
    migrate(engine)
    blobs = FilesystemBlobStore(folder / "blobs", fsync=True)
    archive = Archive(engine, blobs, replace_duplicates=False)
    spent = {name: [0.0, 0.0] for name in PHASES}

    def timed(owner: object, name: str) -> None:
        method = getattr(owner, name)

        @functools.wraps(method)
        def wrapper(*args: object, **kwargs: object) -> object:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name][0] += time.perf_counter() - wall
                spent[name][1] += time.thread_time() - cpu

        setattr(owner, name, wrapper)

    for name in PHASES:
        owner = blobs if name == "store" else archive
        if hasattr(owner, name):
            timed(owner, name)
    spool = folder / "spool"
    spool.mkdir()
    try:
        for number, source in enumerate(files):
            if number == WARM:
                spent = {name: [0.0, 0.0] for name in PHASES}
            copy = spool / f"{number}.dcm"
            shutil.copyfile(source, copy)
            [outcome] = archive.store_files([copy])
            assert outcome.stored, outcome
    finally:
        engine.dispose()
        shutil.rmtree(folder)
    count = len(files) - WARM
    return {name: [1000 * wall / count, 1000 * cpu / count] for name, (wall, cpu) in spent.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setdir", type=Path)
    parser.add_argument("--tree", action="append", required=True, help="name=path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    files = sorted((args.setdir / "one").glob("*.dcm"))[: args.count + WARM]
    if args.child:
        print(json.dumps(measure(args.child, files)))
        return 0
    trees = dict(item.split("=", 1) for item in args.tree)
    runs: dict[str, list[dict[str, list[float]]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, path in trees.items():
            command = [sys.executable, __file__, str(args.setdir), "--tree", f"{name}={path}"]
            command += ["--count", str(args.count), "--child", str(Path(path).resolve())]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(output))
    print(f"CPU ms per instance, medians of {args.rounds} rounds (each round's figures after)")
    print(f"{'phase':20s}" + "".join(f"{name:>28s}" for name in trees))
    for phase in PHASES:
        cells = []
        for name in trees:
            values = [run[phase][1] for run in runs[name] if run[phase][1] > 0]
            shown = ", ".join(f"{value:.2f}" for value in values)
            cells.append(f"{statistics.median(values):.2f} ({shown})" if values else "-")
        print(f"{phase:20s}" + "".join(f"{cell:>28s}" for cell in cells))
    print(json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
