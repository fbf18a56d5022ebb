"""Server CPU time per QIDO-RS request and per no-op request, for trees of Ferry side by side.

    PYTHONPATH=$PWD .venv/bin/python bench/qido_cpu.py main=/work/main branch=$PWD

Each tree runs its own `ferry serve` (`FERRY_HTTP_WORKERS=1`, so one process serves every
request) with that tree first on its PYTHONPATH, and is filled with the benchmark's QIDO-RS
index (`--instances`, studies of 3 series of `--series-size`). Then, for each request, blocks
of `--block` identical requests alternate between the servers (the first server changing from
block to block); a block's cost is the server's user and system CPU time over it
(`/proc/<pid>/stat`: every thread, in clock ticks of 10 ms, so a block should cost about a
second). CPU time, unlike latency, hardly moves when other work shares the machine, and
servers measured in alternating blocks see the same load. Requests: `floor` (`GET /auth/me`,
the no-op authenticated request), `accession` (`studies?AccessionNumber=`, one study), `list`
(`studies?limit=101`, every study), and the rest of `dicomweb.py`'s QIDO-RS mix: `patient`
(`studies?PatientID=`), `series` (`studies/{uid}/series`, 3), `instances` (a series' 100),
`sop` (`instances?SOPInstanceUID=`), `ohif` (`studies?includefield=00081030,00080060&limit=101`).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from _instances import iter_batches, iter_study_instances
from _servers import FerryServer
from _stow import store_instances
from _workload import plan_workload

JSON = "application/json"
DICOM_JSON = "application/dicom+json"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, every thread's, ended ones' too."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", help="name=path of a Ferry tree")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--series-size", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--block", type=int, default=300, help="requests per block")
    parser.add_argument("--requests", default="floor,accession,list")
    args = parser.parse_args()
    workload = plan_workload(1, "qido-cpu", 0, args.series_size, args.instances)
    first = workload.fill[0]
    series = first.series[0]
    study = f"/dicom-web/studies/{first.study_uid}"
    paths = {
        "floor": ("/auth/me", JSON),
        "accession": (f"/dicom-web/studies?AccessionNumber={workload.fill[1].accession_number}",
                      DICOM_JSON),
        "list": ("/dicom-web/studies?limit=101", DICOM_JSON),
        "patient": (f"/dicom-web/studies?PatientID={first.patient_id}", DICOM_JSON),
        "series": (f"{study}/series", DICOM_JSON),
        "instances": (f"{study}/series/{series.series_uid}/instances", DICOM_JSON),
        "sop": ("/dicom-web/instances?SOPInstanceUID="
                f"{series.sop_uids[len(series.sop_uids) // 2]}", DICOM_JSON),
        "ohif": ("/dicom-web/studies?includefield=00081030,00080060&limit=101&offset=0",
                 DICOM_JSON),
    }  # fmt: skip
    servers: list[FerryServer] = []
    try:
        for spec in args.trees:
            name, path = spec.split("=", 1)
            server = FerryServer(name, {"FERRY_HTTP_WORKERS": "1", "PYTHONPATH": path})
            server.start()
            servers.append(server)
            batches = iter_batches(iter_study_instances(workload.fill, 1), 200)
            store_instances(server, batches, 2)
        for request in args.requests.split(","):
            measure(servers, request, *paths[request], args)
    finally:
        for server in servers:
            server.stop()


def measure(
    servers: list[FerryServer], request: str, path: str, accept: str, args: argparse.Namespace
) -> None:
    clients = [server.client() for server in servers]
    costs: dict[str, list[float]] = {server.name: [] for server in servers}
    try:
        for server, client in zip(servers, clients, strict=True):  # warm-up, and a check
            root = server.base_url.removesuffix("/dicom-web")
            for _ in range(50):
                answer = client.get(f"{root}{path}", headers={"Accept": accept})
                assert answer.status_code == 200, (answer.status_code, answer.text[:200])
        for number in range(args.blocks):
            turn = list(zip(servers, clients, strict=True))
            if number % 2:
                turn.reverse()
            for server, client in turn:
                assert server.pid is not None
                url = server.base_url.removesuffix("/dicom-web") + path
                before = cpu_seconds(server.pid)
                for _ in range(args.block):
                    client.get(url, headers={"Accept": accept})
                costs[server.name].append((cpu_seconds(server.pid) - before) * 1e3 / args.block)
    finally:
        for client in clients:
            client.close()
    for name, values in costs.items():
        print(
            f"{request}: {name}: mean {statistics.mean(values):.2f} ms CPU a request, "
            f"median {statistics.median(values):.2f}, blocks {[round(v, 2) for v in values]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
