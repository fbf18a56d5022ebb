"""Server CPU time per WADO-RS series retrieve, for trees of Ferry side by side, interleaved.

    PYTHONPATH=$PWD .venv/bin/python bench/retrieve_cpu.py main=/work/main branch=$PWD

Each tree runs its own `ferry serve` (`FERRY_HTTP_WORKERS=1`, so one process serves every
request) with that tree first on its PYTHONPATH; one series of 100 512×512 CT is stored in
each, then rounds alternate between the servers: `-n` curl retrieves (`--clients` at once),
the server's user and system CPU time (`/proc/<pid>/stat`, all its threads) read before and
after. CPU time, unlike MB/s, hardly moves when other work shares the machine. The idle CPU
of each server over 3 s is printed first: its background threads' share of a round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from _instances import iter_batches, iter_study_instances
from _retrieve import RETRIEVE_ACCEPT, verify_series_retrieve
from _servers import FerryServer
from _stow import store_instances
from _workload import _plan_large

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def curl(url: str, headers: dict[str, str], accept: str) -> tuple[int, int]:
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    for name, value in {**headers, "Accept": accept}.items():
        argv += ["-H", f"{name}: {value}"]
    status, size = subprocess.run([*argv, url], capture_output=True, text=True).stdout.split()
    return int(status), int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", help="name=path of a Ferry tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("-n", type=int, default=20, help="retrieves per round and server")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--accept", default=RETRIEVE_ACCEPT)
    args = parser.parse_args()
    study = _plan_large("cpu", "retrieve", 100, 100)[0]
    series = study.series[0]
    batches = list(iter_batches(iter_study_instances([study], 1), 50))
    servers: list[tuple[FerryServer, str, int]] = []
    try:
        for spec in args.trees:
            name, path = spec.split("=", 1)
            server = FerryServer(name, {"FERRY_HTTP_WORKERS": "1", "PYTHONPATH": path})
            server.start()
            store_instances(server, batches, 1)
            url = f"{server.base_url}/studies/{study.study_uid}/series/{series.series_uid}"
            servers.append((server, url, verify_series_retrieve(server, url, series)))
        run(servers, args)
    finally:
        for server, _, _ in servers:
            server.stop()


def run(servers: list[tuple[FerryServer, str, int]], args: argparse.Namespace) -> None:
    for server, _, _ in servers:
        assert server.pid is not None
        before = sum(cpu_seconds(server.pid))
        time.sleep(3)
        print(f"{server.name}: idle {(sum(cpu_seconds(server.pid)) - before) / 3e-3:.1f} ms CPU/s")
    results: dict[str, list[float]] = {server.name: [] for server, _, _ in servers}
    with ThreadPoolExecutor(args.clients) as pool:
        for number in range(args.rounds):
            for server, url, size in servers:
                line = measure_round(pool, server, url, size, args)
                results[server.name].append(line[0])
                print(f"round {number} {server.name}: {line[1]}", flush=True)
    for name, values in results.items():
        print(f"{name}: median {statistics.median(values):.1f} ms, {[round(v, 1) for v in values]}")


def measure_round(
    pool: ThreadPoolExecutor, server: FerryServer, url: str, size: int, args: argparse.Namespace
) -> tuple[float, str]:
    """CPU milliseconds per retrieve over one round, and the round's line."""
    assert server.pid is not None
    count = args.n // args.clients * args.clients
    get = partial(curl, url, server.headers, args.accept)
    user0, system0 = cpu_seconds(server.pid)
    started = time.perf_counter()
    for _ in range(count // args.clients):
        for answer in pool.map(lambda _: get(), range(args.clients)):
            assert answer == (200, size), answer
    seconds = time.perf_counter() - started
    user1, system1 = cpu_seconds(server.pid)
    user, system = 1000 * (user1 - user0) / count, 1000 * (system1 - system0) / count
    line = (
        f"{user + system:.1f} ms CPU a retrieve (user {user:.1f}, system {system:.1f}), "
        f"{size * count / seconds / 1e6:.0f} MB/s"
    )
    return user + system, line


if __name__ == "__main__":
    main()
