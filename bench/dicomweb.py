"""DICOMweb benchmark (PS3.18): Ferry and Orthanc side by side on one generated workload.

Measures STOW-RS ingest with 1 and N clients (and the server's peak RSS meanwhile), QIDO-RS
latency for a query mix at two index sizes, WADO-RS series retrieve throughput, study and
series /metadata latency, and viewing: single-frame latency (native and JPEG 2000 passthrough),
all frames of a multi-frame instance in one request, rendered JPEG and series thumbnail latency.
Servers are started on free loopback ports with fresh data folders and stopped at the end,
unless given by URL. What each figure means: bench/README.md.

    .venv/bin/python bench/dicomweb.py --only orthanc --quick
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import platform
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from _busy_targets import (
    REFERENCE,
    busy_targets,
    judge_busy,
    reference_shares,
    render_busy,
    render_references,
)
from _floor import measure_floor_latency
from _frames import fraction_of_series, viewing_measures
from _http import UnexpectedAnswer, read_json_array
from _images import ViewingStudy, plan_viewing, viewing_instances
from _instances import StudySpec, iter_batches, iter_study_instances
from _loopback import LoopbackFiles
from _progress import fill_progress, log, raise_interrupt
from _qido import measure_search_latency, plan_queries, short_count
from _report import SERVER_TITLES, Figure, Report, emit
from _retrieve import measure_metadata_latency, measure_parallel_retrieve, measure_series_retrieve
from _servers import (
    ORTHANC_BINARY,
    FerryServer,
    ManagedServer,
    OrthancServer,
    Server,
    ServerError,
    stop_logged,
)
from _stow import (
    ReplayableBatches,
    StoreFailed,
    ingest_label,
    measure_ingest,
    store_instances,
)
from _targets import judge, render_targets
from _workload import Workload, fill_counts, plan_workload, whole_rounds

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MEASURES = ("floor", "stow", "qido", "wado", "metadata", "frames")
VIEWING_SLICES = 5  # CT slices in the viewing study's first series, the thumbnail's series
FRAME_ROWS = 256  # the multi-frame instance's frames are FRAME_ROWS × FRAME_ROWS, 16-bit
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "instances": 500,
        "batch_size": 50,
        "qido_sizes": [10_000, 100_000],
        "series_size": 100,
        "repeat": 30,
        "warmup": 3,
        "wado_repeat": 15,  # a retrieve takes about 20 ms: 5 left medians 1.5× apart between runs
    },
    "quick": {
        "instances": 100,
        "batch_size": 25,  # so that all four clients have work
        "qido_sizes": [1_000],
        "series_size": 50,
        "repeat": 10,
        "warmup": 2,
        "wado_repeat": 3,
    },
}
# Failures a server can cause; anything else is also recorded, but with its traceback.
SERVER_FAILURES = (
    UnexpectedAnswer,
    StoreFailed,
    ServerError,
    httpx.HTTPError,
    subprocess.SubprocessError,
)


@dataclass
class Target:
    """A server and the studies this run has stored on it."""

    server: Server
    catalogue: list[StudySpec] = field(default_factory=list)
    exact: bool = True  # result counts are exact while we know everything the server holds

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def instances(self) -> int:
        return sum(study.instance_count for study in self.catalogue)


def run_ingest(
    args: argparse.Namespace, targets: Sequence[Target], workload: Workload, report: Report
) -> None:
    """STOW-RS with 1 client, then with `--clients`; bodies are built before the clock starts."""
    for clients, studies in (
        (1, workload.ingest_single),
        (args.clients, workload.ingest_concurrent),
    ):
        label = ingest_label(clients)
        log(f"generating {sum(s.instance_count for s in studies)} instances for {label}")
        batches = list(iter_batches(iter_study_instances(studies, args.seed), args.batch_size))
        for target in targets:
            log(f"{target.name}: {label}")
            measure = functools.partial(measure_ingest, target.server, batches, clients)
            stored = attempt(report, target, f"stow.c{clients}", label, measure)
            record_stored(target, studies, stored)


def run_search(
    args: argparse.Namespace,
    targets: Sequence[Target],
    workload: Workload,
    report: Report,
    prior: int,
) -> None:
    """Fill every index to each size with small instances (untimed), then time the query mix."""
    filled = 0
    counts = fill_counts(workload, args.qido_sizes, prior)
    for size, count in zip(args.qido_sizes, counts, strict=True):
        studies, filled = workload.fill[filled:count], count
        total = sum(study.instance_count for study in studies)
        group, label = f"qido.{size}", f"QIDO-RS {short_count(size)}"
        log(f"QIDO-RS at {size} instances: filling with {total} more, {len(studies)} studies")
        batches = ReplayableBatches(
            iter_batches(iter_study_instances(studies, args.seed), args.fill_batch)
        )
        ready = []
        for target in targets:
            fill = functools.partial(
                store_instances,
                target.server,
                batches,
                args.fill_clients,
                fill_progress(target.name, total),
            )
            if attempt(report, target, group, f"{label} (filling the index)", fill, record=False):
                ready.append(target)
            record_stored(target, studies, target in ready)
        for target in ready:
            log(f"{target.name}: {label} query mix, index of {target.instances} instances")
            queries = plan_queries(
                target.catalogue, (workload.fill[0], workload.fill[1]), target.exact
            )
            measure = functools.partial(
                measure_search_latency,
                target.server,
                queries,
                size,
                target.instances,
                args.repeat,
                args.warmup,
            )
            attempt(report, target, group, label, measure)


def run_retrieve(
    args: argparse.Namespace, targets: Sequence[Target], workload: Workload, report: Report
) -> None:
    """Store one study of large instances (untimed), then time WADO-RS and /metadata on it."""
    study = workload.retrieve
    batches = list(iter_batches(iter_study_instances([study], args.seed), args.batch_size))
    measures = retrieve_measures(args, study)
    for target in targets:
        log(f"{target.name}: storing {study.instance_count} instances to retrieve (untimed)")
        try:
            store_instances(target.server, batches, args.clients)
            failure = ""
        except SERVER_FAILURES as error:
            failure = f"storing the study to retrieve failed: {error}"
        record_stored(target, [study], not failure)
        for group, (label, measure) in measures.items():
            if failure:
                report.fail(target.name, group, label, failure)
                continue
            log(f"{target.name}: {label}")
            attempt(report, target, group, label, functools.partial(measure, target.server))
    if "wado" in args.measures:
        run_reference(args, study, report)


def run_reference(args: argparse.Namespace, study: StudySpec, report: Report) -> None:
    """The same series retrieves from `LoopbackFiles`: the same bytes, sent as bare as a server
    can send them (the physical reference; its own column)."""
    reference = LoopbackFiles(study, args.seed)
    target = Target(reference)
    measures = retrieve_measures(args, study, only_retrieve=True)
    log(f"{reference.name}: starting (each series' answer in one file, sent by sendfile)")
    try:
        reference.start()
    except ServerError as error:
        for group, (label, _) in measures.items():
            report.fail(reference.name, group, label, str(error))
        return
    try:
        for group, (label, measure) in measures.items():
            log(f"{reference.name}: {label}")
            attempt(report, target, group, label, functools.partial(measure, reference))
    finally:
        stop_logged(reference)


def retrieve_measures(
    args: argparse.Namespace, study: StudySpec, only_retrieve: bool = False
) -> dict[str, tuple[str, Callable[[Server], list[Figure]]]]:
    """The selected measures on the stored study, by group: (label, measure of one server);
    `only_retrieve` leaves out /metadata."""
    series = study.series[0]
    measures: dict[str, tuple[str, Callable[[Server], list[Figure]]]] = {}
    if "wado" in args.measures:
        retrieve = functools.partial(measure_series_retrieve, study=study, repeat=args.wado_repeat)
        measures["wado.series"] = ("WADO-RS series retrieve", retrieve)
        parallel = functools.partial(
            measure_parallel_retrieve, study=study, repeat=args.wado_repeat, clients=args.clients
        )
        group = f"wado.series.c{args.clients}"
        measures[group] = (f"WADO-RS series retrieve, {args.clients} clients", parallel)
    if "metadata" in args.measures and not only_retrieve:
        sop = series.sop_uids[len(series.sop_uids) // 2]
        for level, path, uids in (
            (
                "instance",
                f"studies/{study.study_uid}/series/{series.series_uid}/instances/{sop}",
                [sop],
            ),
            ("study", f"studies/{study.study_uid}", [u for s in study.series for u in s.sop_uids]),
            ("series", f"studies/{study.study_uid}/series/{series.series_uid}", series.sop_uids),
        ):
            count = f"{len(uids)} instance{'s' if len(uids) > 1 else ''}"
            group, label = f"metadata.{level}", f"WADO-RS {level} metadata ({count})"
            metadata = functools.partial(
                measure_metadata_latency, group=group, label=label, path=f"{path}/metadata",
                sop_uids=uids, repeat=args.repeat, warmup=args.warmup,
            )  # fmt: skip
            measures[group] = (label, metadata)
    return measures


def run_viewing(
    args: argparse.Namespace, targets: Sequence[Target], viewing: ViewingStudy, report: Report
) -> None:
    """Store the viewing study (untimed), then time frames, rendered and thumbnail on it."""
    log(f"generating the viewing study ({viewing.frames}-frame instance included)")
    batches = list(iter_batches(viewing_instances(viewing, args.seed), 1))
    measures = viewing_measures(viewing, args.seed, args.repeat, args.warmup, args.wado_repeat)
    for target in targets:
        log(f"{target.name}: storing the viewing study, {len(batches)} instances (untimed)")
        try:
            store_instances(target.server, batches, 1)
            failure = ""
        except SERVER_FAILURES as error:
            failure = f"storing the viewing study failed: {error}"
        record_stored(target, [viewing.study], not failure)
        for group, (label, measure) in measures.items():
            if failure:
                report.fail(target.name, group, label, failure)
                continue
            log(f"{target.name}: {label}")
            done = attempt(report, target, group, label, functools.partial(measure, target.server))
            if done and group == "frames.multi":
                report.add(target.name, [fraction_of_series(report, target.name)])


def attempt(
    report: Report,
    target: Target,
    group: str,
    label: str,
    measure: Callable[[], Any],
    record: bool = True,
) -> bool:
    """Run one unit of work; a failure becomes ERR in its rows and the run goes on."""
    try:
        result = measure()
    except Exception as error:
        if not isinstance(error, SERVER_FAILURES):
            traceback.print_exc()
        report.fail(target.name, group, label, f"{type(error).__name__}: {error}")
        log(f"{target.name}: {label} FAILED: {error}")
        return False
    if record:
        report.add(target.name, result)
    return True


def record_stored(target: Target, studies: Sequence[StudySpec], stored: bool) -> None:
    """After a failed store the server holds an unknown part: counts become lower bounds."""
    if stored:
        target.catalogue.extend(studies)
    else:
        target.exact = False


def check_empty(target: Target) -> None:
    """A server given by URL may hold studies already: then only lower bounds can be checked."""
    try:
        with target.server.client(timeout=30.0) as client:
            response = client.get(
                f"{target.server.base_url}/studies?limit=1",
                headers={"Accept": "application/dicom+json"},
            )
        held = read_json_array(response)
    except (httpx.HTTPError, UnexpectedAnswer) as error:
        raise ServerError(f"{target.name} at {target.server.base_url}: {error}") from error
    if held:
        target.exact = False
        log(f"{target.name}: not empty; QIDO-RS counts are checked as lower bounds")


def build_servers(args: argparse.Namespace) -> list[Server]:
    servers: list[Server] = []
    for name in [args.only] if args.only else ["ferry", "orthanc"]:
        url = getattr(args, f"{name}_url")
        token = args.ferry_token if name == "ferry" else None
        if url:
            servers.append(Server(name, url, token))
        elif name == "ferry":
            servers.append(FerryServer(extra_env=dict(args.ferry_env)))
            if args.ferry_variant:  # the same code with other settings, in the same run
                servers.append(FerryServer("ferry-variant", dict(args.ferry_variant)))
        else:
            servers.append(OrthancServer(args.orthanc_binary, args.orthanc_plugin))
    return servers


def benchmark(args: argparse.Namespace, servers: Sequence[Server], report: Report) -> None:
    targets = [Target(server) for server in servers]
    for target in targets:
        if not isinstance(target.server, ManagedServer):
            check_empty(target)
    concurrent = whole_rounds(args.instances, args.batch_size, args.clients)
    prior = args.instances + concurrent if "stow" in args.measures else 0
    fill = max(args.qido_sizes) - prior if "qido" in args.measures else 0
    salt = datetime.datetime.now().strftime("%Y%m%dT%H%M%S.%f")
    workload = plan_workload(
        args.seed, salt, args.instances, args.series_size, fill, concurrent_instances=concurrent
    )
    if "floor" in args.measures:
        for target in targets:
            log(f"{target.name}: no-op authenticated request")
            floor = functools.partial(
                measure_floor_latency, target.server, args.repeat, args.warmup
            )
            attempt(report, target, "floor", "no-op authenticated request", floor)
    if "stow" in args.measures:
        run_ingest(args, targets, workload, report)
    if "qido" in args.measures:
        run_search(args, targets, workload, report, prior)
    if {"wado", "metadata"} & set(args.measures):
        run_retrieve(args, targets, workload, report)
    if "frames" in args.measures:
        viewing = plan_viewing(salt, VIEWING_SLICES, args.frames, FRAME_ROWS)
        run_viewing(args, targets, viewing, report)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    servers = build_servers(args)
    columns = [server.name for server in servers]
    if "wado" in args.measures:
        columns.append(REFERENCE)  # filled by run_reference
    report = Report(columns, {**SERVER_TITLES, REFERENCE: LoopbackFiles.title})
    started = datetime.datetime.now().astimezone()
    try:
        with contextlib.ExitStack() as running:
            for server in servers:
                # registered before start: a half-started server stops too
                running.callback(stop_logged, server)
                managed = isinstance(server, ManagedServer)
                log(f"starting {server.name}" if managed else f"using {server.name}")
                server.start()
                log(f"{server.name} ready at {server.base_url} (pid {server.pid or 'n/a'})")
            benchmark(args, servers, report)
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    except ServerError as error:
        log(f"FAILED: {error}")
        return 1
    write_results(args, servers, report, started)
    return 1 if report.failed else 0


def write_results(
    args: argparse.Namespace, servers: Sequence[Server], report: Report, started: datetime.datetime
) -> None:
    document = {
        "benchmark": "dicomweb",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": vars(args),
        "servers": {server.name: server.describe() for server in servers},
        "measures": report.to_json(),
    }
    if "frames" in args.measures and "ferry" in report.servers:
        document["targets"] = judge(report)
    if {"ferry", "orthanc"} <= set(report.servers):
        document["issue14"] = judge_busy(report, busy_targets(args.clients, args.qido_sizes))
    if REFERENCE in report.servers:
        document["references"] = reference_shares(report, args.clients)
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    names = ", ".join(
        f"{SERVER_TITLES.get(s.name, s.name)} {s.version or ''}".strip() for s in servers
    )
    table = report.render_table(
        f"DICOMweb benchmark {started:%Y-%m-%d %H:%M}: {names}; {os.cpu_count()} CPUs"
    )
    if "targets" in document:
        table += "\n\n" + render_targets(document["targets"], "Ferry")
    if "issue14" in document:
        table += "\n\n" + render_busy(document["issue14"])
    if "references" in document:
        table += "\n\n" + render_references(document["references"])
    default = RESULTS_DIR / f"dicomweb-{started:%Y%m%d-%H%M%S}.json"
    emit(table, data, as_json=args.json, output=args.output, default=default)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    servers = parser.add_argument_group("servers")
    servers.add_argument("--only", choices=["ferry", "orthanc"], help="benchmark one server")
    servers.add_argument("--ferry-url", help="DICOMweb root of a running Ferry")
    servers.add_argument("--orthanc-url", help="DICOMweb root of a running Orthanc")
    servers.add_argument(
        "--ferry-token", help="bearer token for the Ferry at --ferry-url (API token or JWT)"
    )
    servers.add_argument(
        "--ferry-env", type=_variable, action="append", default=[], metavar="FERRY_NAME=VALUE",
        help="a setting for the Ferry started here, e.g. FERRY_HTTP_WORKERS=1 (repeatable)",
    )  # fmt: skip
    servers.add_argument(
        "--ferry-variant", type=_variable, action="append", default=[],
        metavar="FERRY_NAME=VALUE",
        help="also run a second Ferry ('ferry-variant') with this setting (repeatable)",
    )  # fmt: skip
    servers.add_argument("--orthanc-binary", default=ORTHANC_BINARY)
    servers.add_argument("--orthanc-plugin", help="libOrthancDicomWeb.so (found if not given)")
    work = parser.add_argument_group("workload (defaults: full run; --quick: smoke run)")
    work.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    work.add_argument(
        "--measures",
        type=_names,
        default=list(MEASURES),
        help=f"comma-separated subset of {','.join(MEASURES)}",
    )
    work.add_argument("--instances", type=_positive, help="512×512 CT instances per ingest (500)")
    work.add_argument("--batch-size", type=_positive, help="instances per STOW-RS request (50)")
    work.add_argument("--clients", type=_positive, default=4, help="concurrent STOW-RS clients (4)")
    work.add_argument("--qido-sizes", type=_sizes, help="index sizes (10000,100000)")
    work.add_argument("--series-size", type=_positive, help="instances per series (100)")
    work.add_argument(
        "--fill-batch", type=_positive, default=200, help="small instances per request"
    )
    work.add_argument(
        "--fill-clients", type=_positive, default=4, help="concurrent filling clients"
    )
    work.add_argument("--repeat", type=_positive, help="timed QIDO-RS and /metadata requests (30)")
    work.add_argument("--warmup", type=int, help="untimed requests first (3)")
    work.add_argument(
        "--wado-repeat", type=_positive, help="timed series and all-frames retrieves (15)"
    )
    work.add_argument(
        "--frames", type=_positive, default=500, help="frames of the multi-frame instance (500)"
    )
    work.add_argument("--seed", type=int, default=1, help="seed of names, dates and pixels (1)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="JSON to stdout, table to stderr")
    output.add_argument("--output", help="JSON file (bench/results/dicomweb-<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.ferry_token and not args.ferry_url:
        parser.error("--ferry-token goes with --ferry-url: a Ferry started here makes its own")
    if args.clients < 2:
        parser.error("--clients: the concurrent ingest needs at least 2 clients")
    for name, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = set(names) - set(MEASURES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measures {sorted(unknown)}")
    return names


def _variable(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("FERRY_"):
        raise argparse.ArgumentTypeError(f"expected FERRY_NAME=VALUE, got {text!r}")
    return name, value


def _sizes(text: str) -> list[int]:
    return sorted(_positive(size) for size in text.split(","))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


if __name__ == "__main__":
    sys.exit(main())
