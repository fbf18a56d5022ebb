"""Exchange benchmark (issue 11): a transfer's ZIP download and its delivery to a PACS node.

One `ferry serve` with two institutions, BENCH (sender) and DEST (receiver), a courier who sends
for BENCH and receives for DEST, and DEST's PACS node, a DCMTK storescp. One study is stored by
STOW-RS and sent to DEST's worklist twice: the first transfer is downloaded as a ZIP (curl, beside
WADO-RS series retrieve of the same study), the second delivered to the node, beside C-STORE
ingest into Ferry of as many instances. What each figure means: bench/README.md.

    .venv/bin/python bench/exchange.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import secrets
import signal
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydicom import dcmread

from _dimse_ferry import FerryDimse
from _dimse_ingest import FerryReceiver, InstanceSet, StoreFailed, measure_ingest, split_folders
from _dimse_peers import StoreSCP, wait_for_echo
from _http import UnexpectedAnswer
from _instances import StudySpec, iter_batches, iter_study_instances
from _memory import PeakMemory, _process_tree, _read_status
from _progress import log, raise_interrupt
from _report import HIGHER, LOWER, Figure, Report, emit
from _retrieve import curl_first_byte, measure_series_retrieve
from _servers import LOOPBACK, ServerError
from _stow import store_instances
from _targets import ViewingTarget, judge, render_targets
from _workload import plan_workload

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SALT = "ferry-exchange-bench"
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"series_size": 100, "repeat": 5},
    "quick": {"series_size": 20, "repeat": 3},
}
DESTINATION = "DEST"
PACS_AE = "PACS_DEST"
COURIER = "courier@bench.test"
ADMIN = "admin@bench.test"
ZIP_ACCEPT = "application/zip"
FLAT_MIB = 64.0  # "memory flat": the ZIP download may grow the server's RSS by at most this
DELIVER_TIMEOUT_S = 900.0
TARGETS = (
    ViewingTarget("ZIP download, at least 80 % of WADO-RS series retrieve MB/s",
                  "zip.fraction", "%", ">=", 80.0),
    ViewingTarget(f"ZIP download, server RSS growth (flat: at most {FLAT_MIB:.0f} MiB)",
                  "zip.rss_growth", "MiB", "<=", FLAT_MIB),
)  # fmt: skip


class ExchangeFerry(FerryDimse):
    """FerryDimse (BENCH, its API client, storescu's node) plus DEST, a system administrator and
    the courier; passwords are made here and never printed (given as `--password=…`: one that
    starts with "-" would otherwise read as an option)."""

    def __init__(self) -> None:
        super().__init__()
        self.password = secrets.token_urlsafe(18)
        self.courier_headers: dict[str, str] = {}

    def prepare(self, argv: list[str], env: dict[str, str]) -> None:
        super().prepare(argv, env)
        self.admin("create-institution", DESTINATION, "Destination")
        self.admin("create-user", ADMIN, "--system-admin", f"--password={self.password}")
        self.admin(
            "create-user", COURIER, "--institution", self.institution,
            "--roles", "sender,receiver,viewer", f"--password={self.password}",
        )  # fmt: skip

    def set_up_exchange(self, pacs: StoreSCP) -> None:
        """DEST takes any sender on its worklist; the courier receives there; DEST's PACS node."""
        root = f"http://{LOOPBACK}:{self.port}"
        with httpx.Client(base_url=root, timeout=60) as http:
            admin = {"Authorization": f"Bearer {self._token(http, ADMIN)}"}
            _ok(http.patch(f"/api/institutions/{DESTINATION}", headers=admin,
                           json={"worklist_restricted": False}))  # fmt: skip
            _ok(http.post(f"/api/institutions/{DESTINATION}/memberships", headers=admin,
                          json={"email": COURIER, "roles": ["receiver", "viewer"]}))  # fmt: skip
            self.courier_headers = {
                "Authorization": f"Bearer {self._token(http, COURIER)}",
                "Accept-Encoding": "identity",
            }
        self.admin(
            "add-node", "--institution", DESTINATION, "--ae-title", pacs.ae_title,
            "--host", LOOPBACK, "--port", str(pacs.port), "--write",
        )  # fmt: skip

    def api(self) -> httpx.Client:
        root = f"http://{LOOPBACK}:{self.port}/api"
        return httpx.Client(base_url=root, headers=self.courier_headers, timeout=120)

    def _token(self, http: httpx.Client, email: str) -> str:
        answer = _ok(http.post("/auth/token", data={"username": email, "password": self.password}))
        return str(answer.json()["access_token"])


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 300:
        raise UnexpectedAnswer(
            f"{response.request.method} {response.request.url.path}: HTTP "
            f"{response.status_code}: {response.text[:300]}"
        )
    return response


def send_to_worklist(ferry: ExchangeFerry, study: StudySpec) -> str:
    with ferry.api() as api:
        body = {"institution": ferry.institution, "destination": DESTINATION,
                "studies": [study.study_uid], "send": True}  # fmt: skip
        return str(_ok(api.post("/transfers", json=body)).json()["id"])


def tree_rss_mib(pid: int) -> float:
    return sum(_read_status(p).get("VmRSS", 0) for p in _process_tree(pid)) / 1024


def measure_zip(
    ferry: ExchangeFerry, study: StudySpec, repeat: int, report: Report
) -> list[Figure]:
    """Median MB/s of the transfer's ZIP read by curl; the server's peak RSS meanwhile."""
    transfer = send_to_worklist(ferry, study)
    url = f"http://{LOOPBACK}:{ferry.port}/api/transfers/{transfer}/download.zip"
    expected = verify_zip(ferry, url, study)
    assert ferry.pid is not None
    before = tree_rss_mib(ferry.pid)
    runs, headers = [], ferry.courier_headers
    with PeakMemory(ferry.pid) as memory:
        for _ in range(repeat):
            status, size, first, seconds = curl_first_byte(url, headers, accept=ZIP_ACCEPT)
            if status != 200 or size != expected:
                raise UnexpectedAnswer(f"ZIP: HTTP {status}, {size} bytes, expected {expected}")
            runs.append(
                {"bytes": size, "first_byte_seconds": first, "seconds": seconds,
                 "mb_per_s": size / seconds / 1e6}
            )  # fmt: skip
    rate = statistics.median(run["mb_per_s"] for run in runs)
    first_byte = statistics.median(run["first_byte_seconds"] for run in runs)
    raw = {"transfer": transfer, "runs": runs, "rss_before_mib": round(before, 1),
           "memory": memory.result()}  # fmt: skip
    label = f"ZIP download, study of {study.instance_count} × 512×512 CT (curl)"
    figures = [
        Figure("zip", "zip.throughput", label, "MB/s", HIGHER, rate, raw),
        Figure("zip", "zip.first_byte", f"{label}, time to first byte", "ms", LOWER,
               1000 * first_byte, raw),
        Figure("zip", "zip.peak_rss", f"{label}, server peak RSS", "MiB", LOWER,
               memory.peak_mib, raw),
        Figure("zip", "zip.rss_growth", f"{label}, server RSS growth", "MiB", LOWER,
               max(0.0, memory.peak_mib - before), raw),
    ]  # fmt: skip
    row = report.rows.get("wado.series.throughput")
    wado = row.values.get("ferry") if row else None
    if wado:
        figures.append(Figure("zip", "zip.fraction", "… as % of WADO-RS series retrieve", "%",
                              HIGHER, 100 * rate / wado, {"wado_mb_per_s": wado}))  # fmt: skip
    return figures


def verify_zip(ferry: ExchangeFerry, url: str, study: StudySpec) -> int:
    """One untimed download through httpx: exactly the study's instances, then the DICOMDIR
    (its records naming every one of them); returns the ZIP's size in bytes."""
    with httpx.Client(headers=ferry.courier_headers, timeout=600) as http:
        response = _ok(http.get(url, headers={"Accept": ZIP_ACCEPT}))
    if response.headers.get("content-type") != ZIP_ACCEPT:
        raise UnexpectedAnswer(f"ZIP: Content-Type {response.headers.get('content-type')!r}")
    expected = {uid for series in study.series for uid in series.sop_uids}
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        uids = [
            str(dcmread(archive.open(name), stop_before_pixels=True).SOPInstanceUID)
            for name in names[:-1]
        ]
        dicomdir = dcmread(archive.open(names[-1]))
    listed = {r.get("ReferencedSOPInstanceUIDInFile") for r in dicomdir.DirectoryRecordSequence}
    if names[-1:] != ["DICOMDIR"] or len(uids) != len(expected) or set(uids) != expected:
        raise UnexpectedAnswer(
            f"ZIP: {len(names)} members, {len(set(uids) & expected)} of the study's "
            f"{len(expected)} instances, last {names[-1:]}"
        )
    if not expected <= listed:
        raise UnexpectedAnswer(f"DICOMDIR: {len(expected - listed)} instances without a record")
    return len(response.content)


def measure_wado(ferry: ExchangeFerry, study: StudySpec, repeat: int) -> list[Figure]:
    assert ferry.pid is not None
    with PeakMemory(ferry.pid) as memory:
        figures = measure_series_retrieve(ferry, study, repeat)
    label = figures[0].label
    return [*figures, Figure("wado.series", "wado.series.peak_rss", f"{label}, server peak RSS",
                             "MiB", LOWER, memory.peak_mib, memory.result())]  # fmt: skip


def measure_delivery(
    ferry: ExchangeFerry, pacs: StoreSCP, study: StudySpec, report: Report
) -> list[Figure]:
    """Instances/s from `POST …/deliver` to the last file storescp wrote."""
    transfer = send_to_worklist(ferry, study)
    pacs.clear()
    expected = study.instance_count
    with ferry.api() as api:
        started = time.time()
        _ok(api.post(f"/transfers/{transfer}/deliver", json={"node": pacs.ae_title}))
        while pacs.received()[0] < expected:
            shown = _ok(api.get(f"/transfers/{transfer}")).json()
            if shown["status"] == "failed":
                raise StoreFailed(f"delivery failed: {shown['history'][-1]}")
            if time.time() - started > DELIVER_TIMEOUT_S:
                raise StoreFailed(f"{pacs.received()[0]} of {expected} delivered in time")
            time.sleep(0.02)
        status = _ok(api.get(f"/transfers/{transfer}")).json()["status"]
    received, payload = pacs.received()
    span = pacs.received_times()
    # storescp names each file <modality>.<SOP Instance UID>
    names = {path.name.split(".", 1)[-1] for path in pacs.output.rglob("*") if path.is_file()}
    sent = {uid for series in study.series for uid in series.sop_uids}
    if received != expected or span is None or names != sent:
        raise StoreFailed(
            f"storescp received {received} files, {len(names & sent)} of {expected} instances"
        )
    seconds = span[1] - started
    rate = expected / seconds
    raw = {"transfer": transfer, "instances": expected, "received_bytes": payload,
           "seconds": round(seconds, 4), "first_to_last_file_seconds": round(span[1] - span[0], 4),
           "status_after": status}  # fmt: skip
    label = f"Transfer delivered to storescp, {expected} instances (send to last file)"
    figures = [
        Figure("deliver", "deliver.rate", label, "instances/s", HIGHER, rate, raw),
        Figure("deliver", "deliver.throughput", label, "MB/s", HIGHER, payload / seconds / 1e6,
               raw),
    ]  # fmt: skip
    row = report.rows.get("ingest.a1.rate")
    ingest = row.values.get("ferry") if row else None
    if ingest:
        figures.append(Figure("deliver", "deliver.fraction", "… as % of C-STORE ingest", "%",
                              HIGHER, 100 * rate / ingest, {"ingest_rate": ingest}))  # fmt: skip
    return figures


def write_ingest_set(args: argparse.Namespace, root: Path, count: int) -> InstanceSet:
    workload = plan_workload(args.seed, SALT, count, args.series_size, 0)
    staging = root / "staging"
    staging.mkdir()
    files, uids, size = [], [], 0
    for number, (uid, blob) in enumerate(iter_study_instances(workload.ingest_single, args.seed)):
        path = staging / f"{number:05d}.dcm"
        path.write_bytes(blob)
        files.append(path)
        uids.append(uid)
        size += len(blob)
    folders = split_folders(files, root / "ingest", 1)
    staging.rmdir()
    studies = tuple(study.study_uid for study in workload.ingest_single)
    return InstanceSet("one", folders, tuple(uids), studies, size)


def attempt(report: Report, group: str, label: str, measure: Any) -> None:
    try:
        report.add("ferry", measure())
    except (UnexpectedAnswer, StoreFailed, ServerError, httpx.HTTPError, OSError) as error:
        report.fail("ferry", group, label, f"{type(error).__name__}: {error}")
        log(f"{label} FAILED: {error}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    started = datetime.datetime.now().astimezone()
    ferry, pacs = ExchangeFerry(), StoreSCP("pacs", ae_title=PACS_AE)
    report = Report(["ferry"], {"ferry": "Ferry"}, None)
    study = plan_workload(args.seed, SALT, 1, args.series_size, 0).retrieve
    try:
        with contextlib.ExitStack() as running:
            work = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="bench-xchg-")))
            ingest_set = write_ingest_set(args, work, study.instance_count)
            for server in (pacs, ferry):
                running.callback(server.stop)
                log(f"starting {server.name}")
                server.start()
            wait_for_echo("ferry", ferry.dicom_port, ferry.ae_title)
            ferry.set_up_exchange(pacs)
            log(f"storing the study ({study.instance_count} instances) by STOW-RS")
            batches = iter_batches(iter_study_instances([study], args.seed), 25)
            store_instances(ferry, batches, 1)
            log("WADO-RS series retrieve")
            attempt(report, "wado.series", "WADO-RS series retrieve",
                    lambda: measure_wado(ferry, study, args.repeat))  # fmt: skip
            log("ZIP download")
            attempt(report, "zip", "ZIP download",
                    lambda: measure_zip(ferry, study, args.repeat, report))  # fmt: skip
            log(f"C-STORE ingest of {ingest_set.count} instances")
            attempt(report, "ingest.a1", "C-STORE ingest",
                    lambda: measure_ingest(FerryReceiver(ferry), ingest_set))  # fmt: skip
            log("delivery to the PACS node")
            attempt(report, "deliver", "Transfer delivery",
                    lambda: measure_delivery(ferry, pacs, study, report))  # fmt: skip
            servers = {"ferry": ferry.describe(), "pacs": pacs.describe()}
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    except (ServerError, UnexpectedAnswer, httpx.HTTPError) as error:
        log(f"FAILED: {error}")
        return 1
    write_results(args, servers, report, started)
    return 1 if report.failed else 0


def write_results(
    args: argparse.Namespace, servers: dict[str, Any], report: Report, started: datetime.datetime
) -> None:
    judged = judge(report, "ferry", TARGETS)
    document = {
        "benchmark": "exchange",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": args.load_at_start,
            "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        },
        "settings": vars(args),
        "servers": servers,
        "targets": judged,
        "measures": report.to_json(),
    }
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    version = servers["ferry"].get("version") or ""
    table = report.render_table(
        f"Exchange benchmark {started:%Y-%m-%d %H:%M}: Ferry {version}; {os.cpu_count()} CPUs"
    )
    table += "\n\n" + render_targets(judged, "Ferry", heading="Targets (issue 11)")
    default = RESULTS_DIR / f"exchange-{started:%Y%m%d-%H%M%S}.json"
    emit(table, data, as_json=args.json, output=args.output, default=default)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a study of 3 × 20, ~30 s")
    parser.add_argument("--series-size", type=int, help="instances per series, 3 series (100)")
    parser.add_argument("--repeat", type=int, help="curl runs per download (5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pixels (1)")
    parser.add_argument("--json", action="store_true", help="JSON to stdout, table to stderr")
    parser.add_argument("--output", help="JSON file (bench/results/exchange-<timestamp>.json)")
    args = parser.parse_args(argv)
    for name, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.load_at_start = [round(value, 2) for value in os.getloadavg()]
    return args


if __name__ == "__main__":
    sys.exit(main())
