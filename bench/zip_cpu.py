"""Server CPU time per MB of a transfer's ZIP download, beside the WADO-RS series retrieve.

    PYTHONPATH=$PWD .venv/bin/python bench/zip_cpu.py --rounds 5

One `ferry serve` and storescp as `exchange.py` starts them (this tree first on the PYTHONPATH),
the study of 3 × 100 512×512 CT stored by STOW-RS and sent to DEST's worklist. The first ZIP
download is measured apart (it is the one that reads every blob and keeps its CRC-32); then
rounds alternate a series retrieve (100 instances) and a whole ZIP download (300 and a
DICOMDIR), each read by curl, the server tree's user and system CPU time (`/proc/<pid>/stat`)
read before and after. CPU time, unlike MB/s, hardly moves when other work shares the machine;
it is counted in clock ticks (10 ms), so a retrieve of 52 MB is good to about 0.2 ms per MB.
Run it in each tree in turn, alternating, to compare them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics

from _dimse_peers import StoreSCP, wait_for_echo
from _instances import iter_batches, iter_study_instances
from _memory import _process_tree
from _retrieve import RETRIEVE_ACCEPT, curl_get
from _servers import LOOPBACK
from _stow import store_instances
from _workload import plan_workload
from exchange import PACS_AE, SALT, ZIP_ACCEPT, ExchangeFerry, send_to_worklist

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for member in _process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def ms_per_mb(pid: int, url: str, headers: dict[str, str], accept: str) -> float:
    before = tree_cpu_seconds(pid)
    status, size, _ = curl_get(url, headers, accept)
    if status != 200:
        raise SystemExit(f"{url}: HTTP {status}")
    return 1000 * (tree_cpu_seconds(pid) - before) / (size / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ferry, pacs = ExchangeFerry(), StoreSCP("pacs", ae_title=PACS_AE)
    study = plan_workload(1, SALT, 1, 100, 0).retrieve
    with contextlib.ExitStack() as running:
        for server in (pacs, ferry):
            running.callback(server.stop)
            server.start()
        wait_for_echo("ferry", ferry.dicom_port, ferry.ae_title)
        ferry.set_up_exchange(pacs)
        store_instances(ferry, iter_batches(iter_study_instances([study], 1), 25), 1)
        assert ferry.pid is not None
        series = f"{ferry.base_url}/studies/{study.study_uid}/series/{study.series[0].series_uid}"
        transfer = send_to_worklist(ferry, study)
        zip_url = f"http://{LOOPBACK}:{ferry.port}/api/transfers/{transfer}/download.zip"
        first = ms_per_mb(ferry.pid, zip_url, ferry.courier_headers, ZIP_ACCEPT)
        retrieves, zips = [], []
        for _ in range(args.rounds):
            retrieves.append(ms_per_mb(ferry.pid, series, ferry.headers, RETRIEVE_ACCEPT))
            zips.append(ms_per_mb(ferry.pid, zip_url, ferry.courier_headers, ZIP_ACCEPT))
    print(f"first ZIP download        {first:.3f} ms CPU per MB")
    for label, runs in (("WADO-RS series retrieve", retrieves), ("ZIP download", zips)):
        shown = ", ".join(f"{run:.3f}" for run in runs)
        print(f"{label:<25} {statistics.median(runs):.3f} ms CPU per MB (median of {shown})")


if __name__ == "__main__":
    main()
