"""The `ferry` command: serve, import, archive check, config."""

from __future__ import annotations

import argparse
import functools
import importlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ferry.settings import Settings, SettingsError, load_settings, settings_variables
from foundation.errors import FerryError


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from dimse.shared_listeners import bind_shared
    from ferry.app import build_archive, create_app
    from ferry.background import (
        Background,
        bridge_count,
        build_shipping,
        describe_mail,
        describe_shipping,
        serve_forked_bridge,
    )
    from ferry.forks import Forks, per_core
    from ferry.http_server import server_config
    from ferry.http_workers import TurnTakingServer
    from ferry.metrics_routes import MetricsListener, collectors
    from foundation import metrics
    from foundation.accept_turns import AcceptTurns

    # Before any other process starts: files of the processes of an earlier run go.
    metrics.configure(settings.metrics_folder(), clean=True)
    archive = build_archive(settings)
    app = create_app(settings, archive)
    build_shipping(settings, archive.engine)  # unusable TLS files stop the start, before forks
    workers = per_core(settings.http_workers)
    bridges = bridge_count(settings)
    base = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
    dicom_host = settings.dicom_host or settings.http_host
    print(f"Ferry is starting; data in {settings.data_dir.resolve()}")
    print(f"  Portal:   {base}/          (sign in, register, dashboards, administration)")
    print(f"  DICOMweb: {base}/dicom-web   (QIDO-RS, WADO-RS, STOW-RS)")
    print(f"  Viewer:   {base}/viewer/     (after `ferry viewer install`)")
    if settings.dicom_port:
        print(f"  DIMSE:    {settings.dicom_ae_title}@{dicom_host}:{settings.dicom_port}")
    if settings.dicom_tls_port:
        print(f"  DIMSE/TLS: {settings.dicom_ae_title}@{dicom_host}:{settings.dicom_tls_port}")
    print(f"  Health:   {base}/healthz  {base}/readyz")
    print(f"  Metrics:  {_describe_metrics(settings, base)}")
    print(f"  Emails:   {describe_mail(settings)}")
    print(f"  Audit:    {describe_shipping(settings)}")
    dimse = f", DIMSE bridge in {bridges}" if bridges else ""
    print(f"  Processes: HTTP in {workers}{dimse}", flush=True)
    config = server_config(
        app, settings, log_level=settings.log_level, timeout_graceful_shutdown=10
    )
    listener = config.bind_socket()  # bound once; every HTTP process accepts from it
    turns = AcceptTurns(workers)  # the least busy HTTP process takes the next connection

    def serve_http() -> None:
        TurnTakingServer(config, turns).run(sockets=[listener])

    # Forked before any thread starts (the bridge, the job worker, uvicorn's own). The DIMSE
    # ports are bound after the HTTP workers are forked (they need no copy) and before the
    # bridges are: every bridge accepts from them, the least busy first.
    forks = Forks(archive.engine)
    forks.start("ferry-http", serve_http, workers - 1)
    shared = bind_shared(settings.dimse(), bridges) if bridges else None
    forks.start(
        "ferry-dimse", functools.partial(serve_forked_bridge, settings, archive, listener, shared),
        bridges - 1,
    )  # fmt: skip
    background = Background(settings, archive, shared=shared)
    metrics_listener = None
    if settings.metrics_port:
        metrics_listener = MetricsListener(settings.metrics_port, collectors(settings, archive))
        metrics_listener.start()
    background.start()
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; with the default
    # action the process would end there, before the clean-up below (the bridge processes,
    # the audit shipping lease, the metric files). Ending by SystemExit lets it run.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        serve_http()
    finally:
        forks.stop()
        background.stop()
        if metrics_listener is not None:
            metrics_listener.stop()
        metrics.remove_files(settings.metrics_folder())
    return 0


def _exit_on_sigterm(signal_number: int, _frame: object) -> None:
    raise SystemExit(128 + signal_number)


def _describe_metrics(settings: Settings, base: str) -> str:
    places = [f"{base}/metrics (bearer token)"] if settings.metrics_token else []
    if settings.metrics_port:
        places.append(f"http://127.0.0.1:{settings.metrics_port}/metrics")
    return ", ".join(places) or "not served (set FERRY_METRICS_TOKEN or FERRY_METRICS_PORT)"


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from archive.importer import import_paths
    from ferry.app import build_archive, configure_libraries
    from policy.store.institutions import find_institution

    configure_libraries(settings)
    archive = build_archive(settings)
    institution = find_institution(archive.engine, args.institution)
    summary = import_paths(
        archive, args.paths, progress=not args.quiet, institution_pk=institution.pk
    )
    print(summary.describe())
    return 0 if not summary.rejected else 1


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from archive.check import check_archive
    from ferry.app import build_archive, configure_libraries

    configure_libraries(settings)
    report = check_archive(build_archive(settings), repair=args.repair)
    for key in report.orphan_blobs:
        print(f"orphan blob (no index row){' - removed' if report.repaired else ''}: {key}")
    for name in report.spooled_files:
        print(f"left-over incoming file{' - removed' if report.repaired else ''}: {name}")
    for key in report.missing_blobs:
        print(f"MISSING BLOB for an indexed instance: {key}")
    print("archive consistent" if report.consistent else "archive has findings")
    return 0 if report.consistent or (report.repaired and not report.missing_blobs) else 1


def _viewer_install(settings: Settings, _args: argparse.Namespace) -> int:
    from dicomweb.viewer_install import (
        ViewerInstallError,
        install_viewer,
        viewer_base_path,
        viewer_root,
    )

    try:
        root, base_path = viewer_root(settings.data_dir), viewer_base_path(settings.public_url)
        done = install_viewer(root, base_path, progress=lambda message: print(message, flush=True))
    except ViewerInstallError as error:
        print(f"ferry: the viewer was not installed: {error}", file=sys.stderr)
        return 1
    print(done.describe())
    return 0


def _config(_settings: Settings, _args: argparse.Namespace) -> int:
    for name, default in settings_variables().items():
        print(f"{name}={default}")
    return 0


# The commands whose arguments a module of their own declares (its `add_…_commands`), by the
# word that names them. Only the named command's module is imported: each imports what its
# commands need (the database, pydicom, an HTTP client), and a command should not wait for
# the others' (`ferry admin routes` took about 2 s, most of it importing what it never used).
_COMMAND_MODULES = {
    "admin": ("ferry.admin_commands", "add_admin_commands"),
    "dimse": ("ferry.dimse_commands", "add_dimse_commands"),
    "notifications": ("ferry.notification_commands", "add_notification_commands"),
    "audit": ("ferry.audit_commands", "add_audit_commands"),
    "oversight": ("ferry.oversight_commands", "add_oversight_commands"),
    "policy": ("ferry.policy_commands", "add_policy_commands"),
    "transfer": ("ferry.exchange_commands", "add_exchange_commands"),
    "worklist": ("ferry.exchange_commands", "add_exchange_commands"),
    "download": ("ferry.exchange_commands", "add_exchange_commands"),
    "request": ("ferry.request_commands", "add_request_commands"),
    "retention": ("ferry.retention_commands", "add_retention_commands"),
}


def _command_word(argv: Sequence[str]) -> str | None:
    """The command named in `argv` (its first word not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """`ferry`'s arguments; given the command line, only the named command's module is read
    (every command's is without it, or when it names none of them: help and usage list all)."""
    parser = argparse.ArgumentParser(prog="ferry", description="DICOM image exchange")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start HTTP, the DIMSE bridge and the job worker")
    serve.set_defaults(run=_serve)
    importer = commands.add_parser("import", help="import DICOM files, folders, DICOMDIRs, zips")
    importer.add_argument("paths", nargs="+", type=Path)
    importer.add_argument("--quiet", action="store_true", help="no progress bar")
    importer.add_argument(
        "--institution", required=True, help="code of the institution the studies belong to"
    )
    importer.set_defaults(run=_import)
    archive = commands.add_parser("archive", help="archive maintenance")
    archive_commands = archive.add_subparsers(dest="archive_command", required=True)
    check = archive_commands.add_parser("check", help="find orphan blobs and left-over files")
    check.add_argument("--repair", action="store_true", help="remove what is found")
    check.set_defaults(run=_check)
    commands.add_parser("config", help="list the FERRY_* variables").set_defaults(run=_config)
    viewer = commands.add_parser("viewer", help="the bundled OHIF viewer")
    viewer_commands = viewer.add_subparsers(dest="viewer_command", required=True)
    install = viewer_commands.add_parser("install", help="fetch OHIF from the npm registry")
    install.set_defaults(run=_viewer_install)
    word = _command_word(argv) if argv is not None else None
    if word in _COMMAND_MODULES:
        wanted = [_COMMAND_MODULES[word]]
    elif word in commands.choices:
        wanted = []  # one of the commands above
    else:
        wanted = list(dict.fromkeys(_COMMAND_MODULES.values()))
    for module_name, adder in wanted:
        getattr(importlib.import_module(module_name), adder)(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"ferry: invalid configuration: {error}", file=sys.stderr)
        return 2
    try:
        return int(args.run(settings, args))
    except SettingsError as error:  # found while assembling (a certificate file, say)
        print(f"ferry: invalid configuration: {error}", file=sys.stderr)
        return 2
    except FerryError as error:  # a domain refusal is a message, not a traceback
        print(f"ferry: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
