"""DIMSE benchmark (PS3.4 Annex B, PS3.7): C-STORE ingest into Ferry, DCMTK's storescp and Orthanc.

Generates a fixed set of 512×512 16-bit CT instances once, sends it with DCMTK's storescu over
one association and over several at once into each receiver in the same run, then measures
Ferry's forwarding of the stored studies to a storescp node. Receivers are started on free
loopback ports with fresh data folders and stopped at the end. What each figure means:
bench/README.md.

    .venv/bin/python bench/dimse.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from _dimse_ferry import FerryDimse
from _dimse_forward import measure_forwarding
from _dimse_ingest import (
    FerryReceiver,
    InstanceSet,
    NullSCPReceiver,
    OrthancDimse,
    OrthancReceiver,
    Receiver,
    StoreFailed,
    StoreSCPReceiver,
    ingest_label,
    measure_ingest,
    split_folders,
)
from _dimse_peers import NullSCP, StoreSCP, wait_for_echo
from _instances import iter_study_instances
from _progress import log, raise_interrupt
from _report import Report, emit, format_number
from _servers import ORTHANC_BINARY, ServerError
from _targets import ViewingTarget, judge, render_targets
from _workload import plan_workload

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RECEIVERS = ("ferry", "orthanc", "storescp", "pynetdicom")
TITLES = {
    "ferry": "Ferry",
    "orthanc": "Orthanc",
    "storescp": "storescp",
    "pynetdicom": "pynetdicom no-op",
}
MEASURES = ("ingest", "forward")
SALT = "ferry-dimse-bench"  # fixed: the same UIDs every run (every receiver starts empty)
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"instances": 500, "series_size": 100},
    "quick": {"instances": 100, "series_size": 50},
}
MEMORY_LIMIT_MIB = 300.0  # issue 14: peak memory during ingest kept under this
BUSY_LOAD = 0.5  # a load average above this at the start is reported: figures will be low
SERVER_FAILURES = (StoreFailed, ServerError, httpx.HTTPError, subprocess.SubprocessError, OSError)


def targets(associations: int) -> tuple[ViewingTarget, ...]:
    """Issue 14: each ingest rate at or above Orthanc's (1.0×), peak memory during each ingest
    at most 300 MiB: the process tree's PSS, each page shared by forked processes counted once
    (as `dicomweb.py` judges it; the VmHWM summed over the processes is shown beside it)."""
    rows = []
    for count in (1, associations):
        key, label = f"ingest.a{count}", ingest_label(count)
        rows += [
            ViewingTarget(f"{label}, at or above Orthanc's", f"{key}.rate", "instances/s", ">=",
                          against="orthanc"),
            ViewingTarget(f"{label}, receiver peak PSS", f"{key}.peak_pss", "MiB", "<=",
                          MEMORY_LIMIT_MIB),
        ]  # fmt: skip
    return tuple(rows)


def targets_issue5(associations: int) -> tuple[ViewingTarget, ...]:
    """Issue 5: ingest at least 60 % of storescp's; forwarding at least 80 % of ingest."""
    rows = [
        ViewingTarget(f"{ingest_label(count)}, at least 60 % of storescp's",
                      f"ingest.a{count}.rate", "instances/s", ">=", against="storescp",
                      factor=0.6)
        for count in (1, associations)
    ]  # fmt: skip
    rows.append(
        ViewingTarget("forwarding, at least 80 % of 1-association ingest", "forward.fraction",
                      "%", ">=", 80.0)
    )  # fmt: skip
    return tuple(rows)


def write_sets(args: argparse.Namespace, root: Path) -> tuple[InstanceSet, InstanceSet]:
    """The one-association set in one folder, the other split into `--associations` folders;
    different UIDs, so that nothing is a duplicate of what a receiver already holds."""
    workload = plan_workload(args.seed, SALT, args.instances, args.series_size, 0)
    made = []
    for name, studies, parts in (
        ("one", workload.ingest_single, 1),
        ("parallel", workload.ingest_concurrent, args.associations),
    ):
        staging = root / f"{name}-all"
        staging.mkdir()
        files, uids, size = [], [], 0
        for number, (sop_uid, blob) in enumerate(iter_study_instances(studies, args.seed)):
            path = staging / f"{number:05d}.dcm"
            path.write_bytes(blob)
            files.append(path)
            uids.append(sop_uid)
            size += len(blob)
        folders = split_folders(files, root / name, parts)
        staging.rmdir()
        study_uids = tuple(study.study_uid for study in studies)
        made.append(InstanceSet(name, folders, tuple(uids), study_uids, size))
    return made[0], made[1]


def run_ingest(
    receivers: Sequence[Receiver],
    sets: Sequence[InstanceSet],
    report: Report,
    ferry: FerryDimse | None,
) -> None:
    for instances in sets:
        for receiver in receivers:
            label = ingest_label(len(instances.folders))
            log(f"{receiver.name}: {label}, {instances.count} instances")
            attempt(report, receiver.name, f"ingest.a{len(instances.folders)}", label,
                    lambda r=receiver, i=instances: measure_ingest(r, i))  # fmt: skip
            if ferry is not None and receiver.name == ferry.name:
                ferry.end_profile_phase(label)


def run_forward(ferry: FerryDimse, instances: InstanceSet, report: Report) -> None:
    label = "Forwarding to storescp"
    if "ferry" in report.failures.get("ingest.a1", {}):
        report.fail("ferry", "forward", label, "not measured: the ingest it forwards failed")
        return
    destination = StoreSCP("forward-destination", ae_title="FWDSCP")
    try:
        destination.start()
        log(f"ferry: forwarding {instances.count} instances to storescp on {destination.port}")
        attempt(report, "ferry", "forward", label,
                lambda: measure_forwarding(ferry, destination, instances, report))  # fmt: skip
    except ServerError as error:
        report.fail("ferry", "forward", label, str(error))
    finally:
        destination.stop()


def attempt(report: Report, name: str, group: str, label: str, measure: Callable[[], Any]) -> bool:
    """One unit of work; a failure becomes ERR in its rows and the run goes on."""
    try:
        figures = measure()
    except Exception as error:
        if not isinstance(error, SERVER_FAILURES):
            traceback.print_exc()
        report.fail(name, group, label, f"{type(error).__name__}: {error}")
        log(f"{name}: {label} FAILED: {error}")
        return False
    report.add(name, figures)
    return True


def build_receivers(
    args: argparse.Namespace,
) -> tuple[list[Any], list[Receiver], FerryDimse | None]:
    """The servers to start and stop, the receivers they offer, and Ferry among them."""
    servers: list[Any] = []
    receivers: list[Receiver] = []
    ferry = None
    for name in args.receivers:
        if name == "ferry":
            profile = Path(args.profile_output) if args.profile else None
            ferry = FerryDimse(args.own_bridge, profile, dict(args.ferry_env))
            servers.append(ferry)
            receivers.append(FerryReceiver(ferry))
        elif name == "orthanc":
            orthanc = OrthancDimse(args.orthanc_binary)
            servers.append(orthanc)
            receivers.append(OrthancReceiver(orthanc))
        elif name == "pynetdicom":
            null = NullSCP()
            servers.append(null)
            receivers.append(NullSCPReceiver(null))
        else:
            storescp = StoreSCP()
            servers.append(storescp)
            receivers.append(StoreSCPReceiver(storescp))
    return servers, receivers, ferry


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    started = datetime.datetime.now().astimezone()
    servers, receivers, ferry = build_receivers(args)
    report = Report(list(args.receivers), TITLES, [("ferry", "orthanc"), ("ferry", "storescp")])
    try:
        with contextlib.ExitStack() as running:
            work = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="bench-dimse-")))
            if args.load_at_start[0] > BUSY_LOAD:
                log(f"load average {args.load_at_start[0]}: other work shares the CPUs")
            log(f"generating 2 × {args.instances} instances in {work}")
            sets = write_sets(args, work)
            for server in servers:
                running.callback(_stop, server)  # registered first: a half-started one stops too
                log(f"starting {server.name}")
                server.start()
                log(f"{server.name} ready (pid {server.pid})")
            for receiver in receivers:
                wait_for_echo(receiver.name, receiver.dicom_port, receiver.ae_title)
            if "ingest" in args.measures:
                run_ingest(receivers, sets, report, ferry)
            if "forward" in args.measures and ferry is not None:
                if "ingest" not in args.measures:  # what is forwarded must be stored first
                    run_ingest([FerryReceiver(ferry)], sets[:1], report, ferry)
                run_forward(ferry, sets[0], report)
            describe = {server.name: server.describe() for server in servers}
        profile = ferry.read_profile() if ferry is not None else []  # the bridge's last phase too
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    except ServerError as error:
        log(f"FAILED: {error}")
        return 1
    write_results(args, describe, report, started, profile)
    return 1 if report.failed else 0


def write_results(
    args: argparse.Namespace,
    servers: dict[str, Any],
    report: Report,
    started: datetime.datetime,
    profile: list[dict[str, Any]],
) -> None:
    judged, judged5 = [], []
    if "ferry" in servers:
        judged = judge(report, "ferry", targets(args.associations))
        judged5 = judge(report, "ferry", targets_issue5(args.associations))
    document = {
        "benchmark": "dimse",
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
        "targets": judged + judged5,
        "measures": report.to_json(),
        "profile": profile,
    }
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    names = ", ".join(
        f"{TITLES[name]} {servers[name].get('version') or ''}".strip() for name in servers
    )
    table = report.render_table(
        f"DIMSE benchmark {started:%Y-%m-%d %H:%M}: {names}; {os.cpu_count()} CPUs"
    )
    if judged:
        table += "\n\n" + _render_summary(report, judged, args.associations)
        table += "\n\n" + render_targets(judged, "Ferry", heading="Targets (issue 14)")
        table += "\n" + render_targets(judged5, "Ferry", heading="Targets (issue 5)")
    for phase in profile:
        if phase["busy_samples"]:
            table += "\n\n" + _render_profile(phase)
    default = RESULTS_DIR / f"dimse-{started:%Y%m%d-%H%M%S}.json"
    emit(table, data, as_json=args.json, output=args.output, default=default)


def _stop(server: Any) -> None:
    if server.pid is not None:
        log(f"stopping {server.name} (pid {server.pid})")
    server.stop()


def _render_summary(report: Report, judged: list[dict[str, Any]], associations: int) -> str:
    """Issue 14's table: Ferry and Orthanc, their ratio, the target and whether it is met, and
    the physical references of the same run."""
    met = {target["key"]: target["met"] for target in judged}
    header = ("measure", "Ferry", "Orthanc", "ratio", "target", "met", "storescp",
              "pynetdicom no-op")  # fmt: skip
    lines = []
    for count in (1, associations):
        plural = "s" if count > 1 else ""
        rate = report.rows.get(f"ingest.a{count}.rate")
        memory = report.rows.get(f"ingest.a{count}.peak_pss")
        summed = report.rows.get(f"ingest.a{count}.peak_rss")
        values = rate.values if rate else {}
        ferry, orthanc = values.get("ferry"), values.get("orthanc")
        ratio = f"{ferry / orthanc:.2f}×" if ferry and orthanc else "n/a"
        lines.append((f"C-STORE, storescu, {count} association{plural} (inst/s)", _cell(ferry),
                      _cell(orthanc), ratio, "≥ 1.0×", _verdict(met.get(f"ingest.a{count}.rate")),
                      _cell(values.get("storescp")), _cell(values.get("pynetdicom"))))  # fmt: skip
        peaks = memory.values if memory else {}
        ferry_peak = peaks.get("ferry")
        lines.append(("… peak PSS of the tree during it (MiB)", _cell(ferry_peak),
                      _cell(peaks.get("orthanc")), "", f"≤ {MEMORY_LIMIT_MIB:.0f}",
                      _verdict(met.get(f"ingest.a{count}.peak_pss")), "", ""))  # fmt: skip
        hwm = summed.values if summed else {}
        lines.append(("  (VmHWM summed over its processes)", _cell(hwm.get("ferry")),
                      _cell(hwm.get("orthanc")), "", "", "", "", ""))  # fmt: skip
    widths = [max(len(str(row[n])) for row in (header, *lines)) for n in range(len(header))]
    out = ["Issue 14, DIMSE:"]
    for number, row in enumerate((header, *lines)):
        out.append("  " + "  ".join(str(cell).ljust(widths[n]) for n, cell in enumerate(row)))
        if number == 0:
            out.append("  " + "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in out)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else format_number(value)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not judged"}[met]


def _render_profile(profile: dict[str, Any], top: int = 12) -> str:
    busy, idle = profile["busy_samples"], profile["idle_samples"]
    lines = [
        f"Where Ferry's bridge process spent its time, {profile['phase']} ({busy} working"
        f" samples of every thread, {idle} waiting; % of working samples):",
        "  by thread: "
        + ", ".join(f"{name} {share}%" for name, share in profile["threads_percent"]),
        "  on the stack (inclusive):",
        *(f"    {share:5.1f}%  {name}" for name, share in profile["total_percent"][:top]),
        "  running (self):",
        *(f"    {share:5.1f}%  {name}" for name, share in profile["self_percent"][:top]),
        "  archive calls (wall time):",
        *(
            f"    {name}: {timing['calls']} calls, {timing['ms_per_call']} ms each"
            for name, timing in profile.get("store_timing", {}).items()
        ),
        "  SQL statements (wall time, the costliest):",
        *(
            f"    {row['statement']}: {row['calls']} calls, {row['ms_per_call']} ms each"
            for row in profile.get("sql_timing", [])[:6]
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 instances, for a smoke run")
    parser.add_argument(
        "--receivers",
        type=_names(RECEIVERS),
        default=list(RECEIVERS),
        help=f"comma-separated subset of {','.join(RECEIVERS)}",
    )
    parser.add_argument(
        "--measures",
        type=_names(MEASURES),
        default=list(MEASURES),
        help=f"comma-separated subset of {','.join(MEASURES)}",
    )
    parser.add_argument("--instances", type=_positive, help="512×512 CT instances per set (500)")
    parser.add_argument("--series-size", type=_positive, help="instances per series (100)")
    parser.add_argument(
        "--associations", type=_positive, default=4, help="parallel storescu processes (4)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the pixels (1)")
    parser.add_argument("--orthanc-binary", default=ORTHANC_BINARY)
    parser.add_argument(
        "--own-bridge",
        action="store_true",
        help="run Ferry's bridge in a process of the benchmark even if `ferry serve` has one",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample where Ferry's bridge spends its time (implies --own-bridge)",
    )
    parser.add_argument(
        "--ferry-env",
        type=_variable,
        action="append",
        default=[],
        metavar="FERRY_NAME=VALUE",
        help="a setting for Ferry, e.g. FERRY_BLOB_FSYNC=false (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="JSON to stdout, table to stderr")
    parser.add_argument("--output", help="JSON file (bench/results/dimse-<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.associations < 2:
        parser.error("--associations: the parallel ingest needs at least 2")
    for name, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.load_at_start = [round(value, 2) for value in os.getloadavg()]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.profile_output = str(RESULTS_DIR / f"dimse-profile-{stamp}.json")
    if args.profile:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return args


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = set(names) - set(allowed)
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown names {sorted(unknown)}")
        return [name for name in allowed if name in names]  # in the table's order

    return parse


def _variable(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("FERRY_"):
        raise argparse.ArgumentTypeError(f"{text!r} is not FERRY_NAME=VALUE")
    return name, value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


if __name__ == "__main__":
    sys.exit(main())
