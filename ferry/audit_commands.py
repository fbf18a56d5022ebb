"""`ferry audit ...`: verify the chain, print its head, search, count and export events.

Reading the trail is itself audited (DCM 110101 "Audit Log Used"): search, stats and export
append an `audit` event naming the operating-system user who ran them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from audit.export import FORMATS, export_events, export_to_file
from audit.models import Outcome
from audit.search import (
    MAX_LIMIT,
    AuditEntry,
    AuditQuery,
    count_events_by_day,
    search_events,
)
from audit.shipping import shipping_status
from audit.trail import AuditRecord, ChainHead, chain_head, record
from audit.verify import verify_chain
from ferry.database import create_database_engine, migrate
from ferry.patient_id_argument import add_patient_id
from ferry.settings import Settings
from foundation.clock import as_utc


def add_audit_commands(commands: Any) -> None:  # argparse's private _SubParsersAction
    """Register `ferry audit verify|head|search|stats|export` on the top-level subparsers."""
    audit = commands.add_parser("audit", help="the hash-chained audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="check the hash chain; exit 1 if it is broken")
    verify.add_argument("--anchor", type=_anchor, help="PK:HASH printed earlier by `audit head`")
    verify.set_defaults(run=_verify)
    sub.add_parser("head", help="print the chain head (PK:HASH) to keep as an anchor").set_defaults(
        run=_head
    )
    search = sub.add_parser("search", help="find events, newest first")
    _add_criteria(search)
    search.add_argument("--limit", type=_limit, default=100)
    search.add_argument("--before-pk", type=int, help="the next page: events older than this pk")
    search.add_argument("--json", action="store_true", help="one JSON document")
    search.set_defaults(run=_search)
    stats = sub.add_parser("stats", help="events per UTC day, action and outcome")
    _add_criteria(stats)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=_stats)
    export = sub.add_parser("export", help="write events as ATNA syslog messages or JSON lines")
    _add_criteria(export)
    export.add_argument("--format", choices=FORMATS, default="atna", dest="export_format")
    export.add_argument("file", help="file to write, or - for standard output")
    export.set_defaults(run=_export)
    shipping = sub.add_parser("shipping", help="how far events have reached the ATNA repository")
    shipping.set_defaults(run=_shipping)


def _add_criteria(parser: argparse.ArgumentParser) -> None:
    add_patient_id(parser)
    parser.add_argument("--study", help="Study Instance UID")
    parser.add_argument("--accession", help="Accession Number")
    parser.add_argument("--transaction")
    parser.add_argument("--actor", help="e.g. user:alice@example.org")
    parser.add_argument("--action", help="e.g. search, read-pixels, download, store")
    parser.add_argument("--outcome", choices=[outcome.value for outcome in Outcome])
    parser.add_argument("--from", dest="since", type=_since, help="DATE or ISO time, inclusive")
    parser.add_argument("--to", dest="until", type=_until, help="DATE (whole day) or ISO time")


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    report = verify_chain(_engine(settings), anchor=args.anchor)
    print(report.describe())
    return 0 if report.intact else 1


def _head(settings: Settings, _args: argparse.Namespace) -> int:
    print(chain_head(_engine(settings)))
    return 0


def _search(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    page = search_events(engine, _query(args), limit=args.limit, before_pk=args.before_pk)
    if args.json:
        events = [entry.as_json() for entry in page.entries]
        print(json.dumps({"events": events, "next_before_pk": page.next_before_pk}, indent=2))
    else:
        for entry in page.entries:
            print(_line(entry))
        if page.next_before_pk is not None:
            print(f"(more: --before-pk {page.next_before_pk})")
    _record_use(engine, "search", args)
    return 0


def _stats(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    counts = count_events_by_day(engine, _query(args))
    if args.json:
        rows = [{**vars(c), "day": c.day.isoformat()} for c in counts]
        print(json.dumps(rows, indent=2))
    else:
        for c in counts:
            print(f"{c.day.isoformat()}  {c.action:<16} {c.outcome:<8} {c.count}")
    _record_use(engine, "stats", args)
    return 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    engine, query = _engine(settings), _query(args)
    source = settings.audit_source()
    if args.file == "-":
        count = export_events(engine, query, sys.stdout.buffer, args.export_format, source)
    else:
        try:
            count = export_to_file(engine, query, Path(args.file), args.export_format, source)
        except OSError as error:
            print(f"ferry: cannot write {args.file}: {error.strerror}", file=sys.stderr)
            return 1
        print(f"exported {count} events to {args.file} ({args.export_format})")
    _record_use(engine, "export", args)
    return 0


def _shipping(settings: Settings, _args: argparse.Namespace) -> int:
    status = shipping_status(_engine(settings))
    destination = status.destination or settings.atna_url or "no repository (FERRY_ATNA_URL)"
    print(f"shipped through event {status.shipped_pk} of {status.head_pk} to {destination}")
    print(f"waiting: {status.backlog} events")
    if status.last_error:
        print(f"last error: {status.last_error}")
    return 0


def _engine(settings: Settings) -> Engine:
    engine = create_database_engine(settings)
    migrate(engine)
    return engine


def _query(args: argparse.Namespace) -> AuditQuery:
    return AuditQuery(
        patient_id=args.patient_id,
        study_uid=args.study,
        accession_number=args.accession,
        transaction=args.transaction,
        actor=args.actor,
        action=args.action,
        outcome=args.outcome,
        since=args.since,
        until=args.until,
    )


def _record_use(engine: Engine, command: str, args: argparse.Namespace) -> None:
    criteria = {
        name: value.isoformat() if isinstance(value, datetime) else str(value)
        for name, value in vars(_query(args)).items()
        if value is not None
    }
    record(
        engine,
        AuditRecord(
            action="audit",
            outcome=Outcome.ALLOWED,
            actor=f"cli:{_os_user()}",
            actor_kind="cli",
            rule="command-line",
            patient_id=args.patient_id or "",
            study_uid=args.study or "",
            accession_number=args.accession or "",
            detail={"command": f"audit {command}", "criteria": criteria},
        ),
    )


def _line(entry: AuditEntry) -> str:
    at = entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    fields = (entry.outcome, entry.action, entry.actor, entry.patient_id, entry.study_uid)
    described = "  ".join(field or "-" for field in fields)
    rule = f"  [{entry.rule}]" if entry.rule else ""
    return f"{entry.pk:>8}  {at}Z  {described}{rule}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _moment(text: str) -> datetime | date:
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected YYYY-MM-DD or an ISO time, got {text!r}"
        ) from None
    return as_utc(moment)


def _since(text: str) -> datetime:
    moment = _moment(text)
    if isinstance(moment, datetime):
        return moment
    return datetime.combine(moment, time(), UTC)


def _until(text: str) -> datetime:
    """A date means through the end of that day (UTC); a time is an exclusive bound."""
    moment = _moment(text)
    if isinstance(moment, datetime):
        return moment
    if moment == date.max:
        raise argparse.ArgumentTypeError(f"{text} is past the last day Ferry can count to")
    return datetime.combine(moment + timedelta(days=1), time(), UTC)


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def _anchor(text: str) -> ChainHead:
    try:
        return ChainHead.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
