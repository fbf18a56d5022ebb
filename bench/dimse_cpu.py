"""The DIMSE bridge's CPU time per C-STORE instance, per thread (issue 14).

    PYTHONPATH=$PWD .venv/bin/python bench/dimse_cpu.py --make 400 SETDIR   # once
    PYTHONPATH=$PWD .venv/bin/python bench/dimse_cpu.py SETDIR [--serve] [FERRY_X=VALUE ...]

SETDIR holds `warm/` (10 instances, sent first), `one/` (sent over one association) and
`par/0` … `par/3` (sent over four at once): 512×512 CT, 525 KB Part 10 files (`_instances.py`),
with UIDs new to an empty Ferry, each run starting one. The
bridge runs in a process of the benchmark (`--serve`: in `ferry serve`); its user + system CPU
seconds (`/proc/<pid>/stat`) before and after each set, over the instances, is the figure, and
each thread's share from `/proc/<pid>/task/*/stat`, named with `py-spy dump` where installed.
Wall-clock rates are printed too, but on a shared machine only the CPU time is comparable.
With `--serve`, the figures are those of `ferry serve`'s whole process tree (its forked HTTP
workers and bridges too), and `FERRY_X=VALUE` arguments are settings for it
(`FERRY_DICOM_PROCESSES=1`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from _dimse_ferry import FerryDimse
from _dimse_ingest import tree_cpu_seconds
from _dimse_peers import send_folders
from _instances import iter_study_instances
from _memory import PeakMemory
from _workload import plan_workload

SAMPLE_S = 0.05


def _task_times(pid: int) -> dict[int, tuple[int, int]]:
    times = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        times[int(task)] = (int(fields[11]), int(fields[12]))
    return times


def _thread_names(pid: int) -> dict[int, str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {}
    dump = subprocess.run([spy, "dump", "-p", str(pid)], capture_output=True, text=True).stdout
    pattern = r'Thread (?:0x[0-9A-Fa-f]+ )?\(?(\d+)\)? \((?:idle|active)[^)]*\): "([^"]+)"'
    return {
        int(m.group(1)): re.sub(r"[-@ ]?\d+", "", m.group(2)).strip()
        for m in re.finditer(pattern, dump)
    }


def measure(pid: int, port: int, ae_title: str, folders: list[Path]) -> dict[str, object]:
    count = sum(1 for folder in folders for _ in folder.iterdir())
    last: dict[int, tuple[int, int]] = {}
    names: dict[int, str] = {}
    done = threading.Event()

    def sample() -> None:
        rounds = 0
        while not done.wait(SAMPLE_S):
            last.update(_task_times(pid))
            rounds += 1
            if rounds in (20, 45):  # threads live as long as their association: name them then
                names.update(_thread_names(pid))

    os.sync()
    base = _task_times(pid)
    sampler = threading.Thread(target=sample)
    sampler.start()
    with PeakMemory(pid) as memory:
        before = tree_cpu_seconds(pid)
        sent = send_folders(port, ae_title, folders)
        time.sleep(0.3)
        used = tree_cpu_seconds(pid) - before
    done.set()
    sampler.join()
    if sent.errors:
        raise RuntimeError(f"storescu failed: {sent.errors}")
    ticks = os.sysconf("SC_CLK_TCK")
    threads: collections.Counter[str] = collections.Counter()
    for tid, (user, system) in last.items():
        name = names.get(tid, "?")
        start = base.get(tid, (0, 0))
        threads[f"{name} user"] += user - start[0]
        threads[f"{name} system"] += system - start[1]
    return {
        "instances": count,
        "cpu_ms_per_instance": round(used * 1000 / count, 2),
        "instances_per_s": round(count / sent.seconds, 1),
        "peak_rss_mib": round(memory.peak_mib),
        "peak_pss_mib": round(memory.peak_pss_mib),
        "threads_ms_per_instance": {
            name: round(value * 1000 / ticks / count, 2)
            for name, value in sorted(threads.items())
            if value
        },
    }


def make_sets(root: Path, count: int) -> None:
    for name, salt, size, parts in (
        ("warm", "cpu-warm", 10, 1),
        ("one", "cpu", count, 1),
        ("par", "cpu-par", count, 4),
    ):
        workload = plan_workload(1, salt, size, 100, 0)
        blobs = [blob for _, blob in iter_study_instances(workload.ingest_single, 1)]
        share = -(-len(blobs) // parts)
        for part in range(parts):
            folder = root / name / str(part) if parts > 1 else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for number, blob in enumerate(blobs[part * share : (part + 1) * share]):
                (folder / f"{part * share + number:05d}.dcm").write_bytes(blob)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The DIMSE bridge's CPU time per C-STORE instance, per thread (issue 14).",
        epilog="Make the sets once with --make COUNT SETDIR, then measure with SETDIR.",
    )
    parser.add_argument(
        "--make",
        type=int,
        metavar="COUNT",
        help="write the sets of COUNT instances into SETDIR, then stop",
    )
    parser.add_argument(
        "setdir",
        type=Path,
        metavar="SETDIR",
        help="warm/, one/ and par/0..3 of 525 KB CT instances",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="measure the bridge of `ferry serve` (its whole process tree)",
    )
    parser.add_argument(
        "settings",
        nargs="*",
        metavar="FERRY_X=VALUE",
        help="settings for Ferry, e.g. FERRY_DICOM_PROCESSES=1",
    )
    arguments = parser.parse_intermixed_args()
    for setting in arguments.settings:
        if not setting.startswith("FERRY_") or "=" not in setting:
            parser.error(f"{setting!r} is not a FERRY_X=VALUE setting")
    return arguments


def main() -> int:
    arguments = _arguments()
    sets = arguments.setdir
    if arguments.make is not None:
        make_sets(sets, arguments.make)
        return 0
    settings = dict(setting.split("=", 1) for setting in arguments.settings)
    ferry = FerryDimse(own_bridge=not arguments.serve, extra_env=settings)
    ferry.start()
    try:
        pid = ferry.ingest_pid
        assert pid is not None
        warm = send_folders(ferry.dicom_port, ferry.ae_title, [sets / "warm"])
        if warm.errors:
            raise RuntimeError(f"storescu failed: {warm.errors}")
        result = {
            f"a{len(folders)}": measure(pid, ferry.dicom_port, ferry.ae_title, folders)
            for folders in ([sets / "one"], sorted((sets / "par").iterdir()))
        }
    finally:
        ferry.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
