"""Server CPU time per STOW-RS instance, for two source trees of Ferry taken in turn.

On a shared machine wall-clock throughput says little; the CPU time the server's process tree
spent (user + system, from /proc) per instance stored does. Each round starts one Ferry per tree
(`FERRY_HTTP_WORKERS=1`, the tree first on PYTHONPATH), stores one untimed batch, then the
benchmark's 512×512 CT batches of 50, and reads the tree's CPU time before and after; the trees
alternate, first one then the other, so a change of load weighs on both.

    .venv/bin/python bench/stow_cpu.py --tree main=/path/to/main --tree branch=/path/to/branch

`--tree orthanc=orthanc` takes Orthanc (with its DICOMweb plugin, configured as in `dicomweb.py`)
in turn with the trees, and `--defaults` starts each Ferry with its own defaults (an HTTP process
per core) instead of one HTTP process: with both, a steady-state STOW-RS comparison of the two
servers, longer than `dicomweb.py`'s (`--count 1000 --clients 4`). Each line also gives the
client's CPU per instance (this process, the same for every server) and how busy the machine's
CPUs were over the timed part (`/proc/stat`), so a run bound by the CPUs shows as such.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from _instances import iter_batches, iter_study_instances
from _servers import FerryServer, ManagedServer, OrthancServer
from _stow import store_instances
from _workload import plan_workload

BATCH = 50
TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for parent in pids:
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:
                continue
            pids.extend(int(child) for child in children.split())
    return pids


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) seconds of the process tree, reaped children included."""
    user = system = 0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return user / TICKS, system / TICKS


def machine_ticks() -> tuple[int, int]:
    """(all, idle) ticks of the machine's CPUs so far (`/proc/stat`; idle counts iowait)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def client_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    tree: str, salt: str, count: int, clients: int, defaults: bool = False
) -> dict[str, float]:
    """One fresh server of `tree` ("orthanc": Orthanc): CPU ms per instance (user, system),
    the client's, instances/s, the share of the machine's CPUs busy, instances stored."""
    workload = plan_workload(7, salt, count + BATCH, 100, 10)
    batches = list(iter_batches(iter_study_instances(workload.ingest_single, 7), BATCH))
    server: ManagedServer
    if tree == "orthanc":
        server = OrthancServer()
    else:
        os.environ["PYTHONPATH"] = tree
        server = FerryServer("ferry", {} if defaults else {"FERRY_HTTP_WORKERS": "1"})
    server.start()
    try:
        pid = server.pid
        assert pid is not None
        store_instances(server, batches[:1], 1)  # imports, caches, first statements: untimed
        time.sleep(0.5)
        user0, system0 = cpu_seconds(pid)
        client0, (all0, idle0) = client_seconds(), machine_ticks()
        started = time.perf_counter()
        tally = store_instances(server, batches[1:], clients)
        seconds = time.perf_counter() - started
        client1, (all1, idle1) = client_seconds(), machine_ticks()
        time.sleep(0.5)
        user1, system1 = cpu_seconds(pid)
    finally:
        server.stop()
    per = 1000 / tally.instances
    return {
        "user": (user1 - user0) * per,
        "system": (system1 - system0) * per,
        "client": (client1 - client0) * per,
        "rate": tally.instances / seconds,
        "busy": 1 - (idle1 - idle0) / max(1, all1 - all0),
        "instances": tally.instances,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH, twice or more")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300, help="instances timed per server")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument(
        "--defaults", action="store_true", help="Ferry with its defaults, not one HTTP process"
    )
    options = parser.parse_args()
    trees = dict(item.split("=", 1) for item in options.tree)
    names = list(trees)
    totals: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(options.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            salt = f"cpu-{name}-{round_}-{time.time()}"
            got = measure(trees[name], salt, options.count, options.clients, options.defaults)
            user, system = got["user"], got["system"]
            totals[name].append(user + system)
            load = os.getloadavg()[0]
            print(
                f"round {round_} {name}: {user + system:.2f} ms CPU per instance "
                f"(user {user:.2f}, system {system:.2f}; {got['instances']:.0f} instances, "
                f"{got['rate']:.0f}/s, client {got['client']:.2f} ms, "
                f"CPUs {100 * got['busy']:.0f} % busy, load {load:.1f})",
                flush=True,
            )
    for name, values in totals.items():
        median = sorted(values)[len(values) // 2]
        print(f"{name}: {' '.join(f'{v:.2f}' for v in values)} ms; median {median:.2f}")


if __name__ == "__main__":
    main()
