"""`ferry dimse ...`: a bridge process alone, and an administrator's hands on the SCU side.

`serve` runs one more bridge on the DIMSE ports (the scaled shape: beside `ferry serve`'s own),
`echo` tests a node's address and AE title, `find` queries it, `retrieve` fetches a study from
it into Ferry (C-MOVE needs `ferry serve` listening to receive; C-GET does not), `forward` queues
a delivery that the running worker carries out.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from ferry.settings import Settings
from foundation.errors import FerryError, InvalidQuery

_SHOWN = ("PatientID", "PatientName", "StudyDate", "AccessionNumber", "StudyInstanceUID")
_DEFAULT_KEYS = {
    "PATIENT": ("PatientID", "PatientName"),
    "STUDY": (*_SHOWN, "ModalitiesInStudy", "StudyDescription"),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber"),
}


def _context(settings: Settings) -> Any:
    from dimse.context import BridgeContext
    from ferry.app import build_archive, configure_libraries

    configure_libraries(settings)
    return BridgeContext(settings.dimse(), build_archive(settings))


def _node(context: Any, ae_title: str) -> Any:
    from dimse.callers import find_node

    node = find_node(context.engine, ae_title)
    if node is None:
        raise InvalidQuery(f"no node with AE title {ae_title!r} (see `ferry admin nodes`)")
    return node


def _identifier(level: str, keys: list[str]) -> Dataset:
    """`-k PatientName=DOE*` pairs over the level's usual return keys."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword in _DEFAULT_KEYS[level]:
        setattr(identifier, keyword, "")
    for item in keys:
        keyword, _, value = item.partition("=")
        keyword = keyword.strip()
        if tag_for_keyword(keyword) is None or dictionary_VR(keyword) == "SQ":
            raise InvalidQuery(f"-k {item!r}: {keyword!r} is not an attribute Ferry can send")
        setattr(identifier, keyword, value)
    return identifier


def _echo(settings: Settings, args: argparse.Namespace) -> int:
    from dimse.remote import echo_node

    context = _context(settings)
    node = _node(context, args.node)
    seconds = echo_node(context, node)
    print(f"C-ECHO {node.ae_title} at {node.host}:{node.port}: status 0x0000 "
          f"({seconds * 1000:.0f} ms)")  # fmt: skip
    return 0


def _find(settings: Settings, args: argparse.Namespace) -> int:
    from dimse.remote import find_on_node

    context = _context(settings)
    node = _node(context, args.node)
    identifier = _identifier(args.level, args.key)
    model = "patient" if args.patient_root else "study"
    shown = [keyword for keyword in identifier.dir() if keyword != "QueryRetrieveLevel"]
    print("\t".join(shown))
    count = 0
    for answer in find_on_node(context, node, identifier, model, requested_by="cli"):
        print("\t".join(str(answer.get(keyword, "")) for keyword in shown))
        count += 1
    print(f"{count} match(es) on {node.ae_title}", file=sys.stderr)
    return 0


def _retrieve(settings: Settings, args: argparse.Namespace) -> int:
    from dimse.remote import retrieve_from_node

    context = _context(settings)
    node = _node(context, args.node)
    result = retrieve_from_node(
        context, node, args.study, institution_pk=node.institution_pk, requested_by="cli"
    )
    print(
        f"{result.method}: {result.completed} completed, {result.failed} failed, "
        f"{result.warning} with warnings; {result.stored} instance(s) of the study in Ferry"
    )
    return 0 if not result.failed else 1


def _forward(settings: Settings, args: argparse.Namespace) -> int:
    from dimse.forward import enqueue_forward
    from foundation.clock import utc_now

    context = _context(settings)
    node = _node(context, args.node)
    if context.archive.read_study_access(args.study) is None:
        raise InvalidQuery(f"study {args.study} is not in Ferry")
    with context.engine.begin() as connection:
        job = enqueue_forward(
            connection,
            study_uid=args.study,
            node_pk=node.pk,
            now=utc_now(),
            requested_by="cli",
            max_attempts=settings.forward_max_attempts,
        )
    print(f"job {job} queued: study {args.study} to {node.ae_title} (`ferry admin jobs`)")
    return 0


def _guarded(run: Any) -> Any:
    def command(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return int(run(settings, args))
        except (FerryError, OSError) as error:
            print(f"ferry dimse: {error}", file=sys.stderr)
            return 1
        except Exception as error:  # the node's trouble (unreachable, refused) is a message
            print(f"ferry dimse: {type(error).__name__}: {error}", file=sys.stderr)
            return 1

    return command


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from ferry.app import build_archive, configure_libraries
    from ferry.background import serve_bridge_only

    configure_libraries(settings)
    archive = build_archive(settings)
    try:
        serve_bridge_only(settings, archive)
    finally:
        archive.engine.dispose()
    return 0


def add_dimse_commands(commands: Any) -> None:
    dimse = commands.add_parser("dimse", help="the DIMSE bridge alone, and talking to DICOM nodes")
    verbs = dimse.add_subparsers(dest="dimse_command", required=True)
    serve = verbs.add_parser(
        "serve", help="run a DIMSE bridge process only (shares the port with the others)"
    )
    serve.set_defaults(run=_serve)
    echo = verbs.add_parser("echo", help="C-ECHO a node")
    echo.add_argument("--node", metavar="AET", required=True)
    echo.set_defaults(run=_guarded(_echo))
    find = verbs.add_parser("find", help="C-FIND on a node")
    find.add_argument("--node", metavar="AET", required=True)
    find.add_argument("--level", default="STUDY", choices=sorted(_DEFAULT_KEYS))
    find.add_argument("-k", "--key", action="append", default=[], metavar="KEYWORD=VALUE")
    find.add_argument("--patient-root", action="store_true", help="Patient Root (default Study)")
    find.set_defaults(run=_guarded(_find))
    for name, run, text in (
        ("retrieve", _retrieve, "fetch a study from a node into Ferry (C-MOVE or C-GET)"),
        ("forward", _forward, "queue a delivery of a study to a node"),
    ):
        parser = verbs.add_parser(name, help=text)
        parser.add_argument("--node", metavar="AET", required=True)
        parser.add_argument("--study", metavar="UID", required=True)
        parser.set_defaults(run=_guarded(run))
