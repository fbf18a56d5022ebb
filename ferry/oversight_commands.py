"""`ferry oversight transactions|audit|statistics`: one institution's oversight, for the operator.

The same queries as `/api/oversight/...`, run by whoever operates the server (like `ferry
audit`); each run is audited as an `audit` event of the institution, naming the
operating-system user. `--csv FILE` (or `-` for standard output) writes every row. `--from` and
`--to` read a day (`YYYY-MM-DD`) as one of the institution's time zone, as the API does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine

from audit.models import Outcome
from audit.search import AuditQuery, iter_events, search_events
from audit.trail import AuditRecord, record
from exchange.oversight import statistics, trail
from exchange.oversight._csv import iter_csv
from exchange.oversight.days import local_zone, parse_moment, read_range
from exchange.oversight.transactions import (
    CSV_HEADER,
    DIRECTIONS,
    KINDS,
    SORTS,
    TransactionQuery,
    as_row,
    iter_transactions,
    search_transactions,
)
from ferry.audit_commands import _engine, _limit, _os_user
from ferry.audit_commands import _line as event_line
from ferry.patient_id_argument import add_patient_id
from ferry.settings import Settings
from foundation.errors import InvalidQuery
from policy.models import Institution
from policy.store import snapshot
from policy.store.institutions import find_institution


def add_oversight_commands(commands: Any) -> None:  # argparse's private _SubParsersAction
    oversight = commands.add_parser("oversight", help="an institution's transactions, statistics")
    sub = oversight.add_subparsers(dest="oversight_command", required=True)
    transactions = sub.add_parser("transactions", help="the Transaction Audit Summary")
    _add_common(transactions)
    transactions.add_argument("--direction", choices=DIRECTIONS)
    transactions.add_argument("--kind", action="append", choices=KINDS, default=[])
    transactions.add_argument("--state", action="append", default=[], help="repeatable")
    transactions.add_argument("--counterpart", help="the other institution's code")
    add_patient_id(transactions)
    transactions.add_argument("--accession")
    transactions.add_argument("--sort", choices=SORTS, default="created")
    transactions.add_argument("--asc", action="store_true", help="oldest first")
    transactions.add_argument("--limit", type=_count, default=50, help="rows shown (not CSV)")
    transactions.add_argument("--offset", type=int, default=0)
    transactions.set_defaults(run=_transactions)
    events = sub.add_parser("audit", help="the System Audit Trail, scoped to the institution")
    _add_common(events)
    add_patient_id(events)
    events.add_argument("--study", help="Study Instance UID")
    events.add_argument("--accession")
    events.add_argument("--transaction", help="a transfer's or request's id")
    events.add_argument("--user", help="who acted: user:EMAIL, node:AE_TITLE, ...")
    events.add_argument("--action")
    events.add_argument("--outcome", choices=[outcome.value for outcome in Outcome])
    events.add_argument("--limit", type=_limit, default=100, help="events shown (not CSV)")
    events.add_argument("--before-pk", type=int, help="the next page: events older than this pk")
    events.set_defaults(run=_audit_trail)
    stats = sub.add_parser("statistics", help="volumes, turnaround and failures")
    _add_common(stats)
    stats.add_argument("--interval", choices=statistics.INTERVALS, default="day")
    stats.set_defaults(run=_statistics)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--institution", required=True, help="the institution's code")
    since = "DATE (a day of the institution's time zone) or ISO time, inclusive"
    until = "DATE (a whole day of the institution's time zone) or ISO time"
    parser.add_argument("--from", dest="since", type=_moment, help=since)
    parser.add_argument("--to", dest="until", type=_moment, help=until)
    parser.add_argument("--csv", metavar="FILE", help="write CSV to FILE (- for standard output)")


def _moment(text: str) -> str:
    """Checked here (exit 2 when unreadable); read in the institution's zone once it is known."""
    for end in (False, True):
        try:
            parse_moment(text, end=end)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _range(institution: Institution, args: argparse.Namespace) -> tuple[Any, Any]:
    """`--from` and `--to` as UTC times, their days the institution's own."""
    try:
        return read_range(args.since, args.until, local_zone(institution.timezone))
    except ValueError as error:
        raise InvalidQuery(str(error)) from None


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"expected 1 to 500, got {text!r}")
    return int(text)


def _transactions(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    institution = find_institution(engine, args.institution)
    codes = {pk: facts.code for pk, facts in snapshot(engine).institutions.items()}
    counterpart = None
    if args.counterpart:
        counterpart = next((pk for pk, code in codes.items() if code == args.counterpart), -1)
    since, until = _range(institution, args)
    query = TransactionQuery(
        institution_pk=institution.pk or 0,
        direction=args.direction,
        kinds=tuple(args.kind),
        states=tuple(args.state),
        counterpart_pk=counterpart,
        patient_id=args.patient_id,
        accession_number=args.accession,
        since=since,
        until=until,
        sort=args.sort,
        descending=not args.asc,
    )
    if args.csv:
        rows = (as_row(item, codes) for item in iter_transactions(engine, query))
        code = _write_csv(args.csv, CSV_HEADER, rows)
    else:
        total, items = search_transactions(engine, query, args.offset, args.limit)
        for item in items:
            print(_line(as_row(item, codes)))
        print(f"({len(items)} of {total}; --offset and --limit page, --csv FILE writes all)")
        code = 0
    _record_use(engine, institution.pk or 0, "transactions", args)
    return code


def _line(row: Sequence[object]) -> str:
    values = dict(zip(CSV_HEADER, row, strict=True))
    when = values["created_at"]
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if isinstance(when, datetime) else ""
    return (
        f"{stamp}Z  {values['id']}  {values['kind']:<8} {values['direction']:<8} "
        f"{values['sender']} -> {values['receiver']}  {values['state']:<12} "
        f"patient {values['patient_id'] or '-'}  accession {values['accession_number'] or '-'}"
    )


def _statistics(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    institution = find_institution(engine, args.institution)
    codes = {pk: facts.code for pk, facts in snapshot(engine).institutions.items()}
    since, until = _range(institution, args)
    report = statistics.compute(
        engine, institution.pk or 0, since, until, args.interval, codes,
        timezone=institution.timezone,
    )  # fmt: skip
    if args.csv:
        code = _write_csv(args.csv, statistics.CSV_HEADER, statistics.csv_rows(report))
    else:
        for line in statistics.describe(report):
            print(line)
        code = 0
    _record_use(engine, institution.pk or 0, "statistics", args)
    return code


def _audit_trail(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    institution = find_institution(engine, args.institution)
    since, until = _range(institution, args)
    query = AuditQuery(
        patient_id=args.patient_id,
        study_uid=args.study,
        accession_number=args.accession,
        transaction=args.transaction,
        actor=args.user,
        action=args.action,
        outcome=args.outcome,
        since=since,
        until=until,
        within=trail.visible_to(institution.pk or 0),
    )
    if args.csv:
        codes = {pk: facts.code for pk, facts in snapshot(engine).institutions.items()}
        rows = (trail.as_row(entry, codes) for entry in iter_events(engine, query))
        code = _write_csv(args.csv, trail.CSV_HEADER, rows)
    else:
        page = search_events(engine, query, limit=args.limit, before_pk=args.before_pk)
        for entry in page.entries:
            print(event_line(entry))
        if page.next_before_pk is not None:
            print(f"(more: --before-pk {page.next_before_pk}; --csv FILE writes all)")
        code = 0
    _record_use(engine, institution.pk or 0, "audit trail", args)
    return code


@contextmanager
def _target(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdout.buffer
        return
    path = Path(name)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as target:
            yield target
        partial.replace(path)  # a half-written file never looks complete
    finally:
        partial.unlink(missing_ok=True)


def _write_csv(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    try:
        with _target(name) as target:
            for piece in iter_csv(header, rows):
                target.write(piece)
    except OSError as error:
        print(f"ferry: cannot write {name}: {error.strerror}", file=sys.stderr)
        return 1
    if name != "-":
        print(f"wrote {name}")
    return 0


def _record_use(engine: Engine, institution_pk: int, view: str, args: argparse.Namespace) -> None:
    criteria = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in vars(args).items()
        if name not in {"run", "command", "oversight_command"} and value not in (None, [], False)
    }
    record(
        engine,
        AuditRecord(
            action="audit",
            outcome=Outcome.ALLOWED,
            actor=f"cli:{_os_user()}",
            actor_kind="cli",
            institution_pk=institution_pk,
            rule="command-line",
            reason=f"{view} of {args.institution}",
            patient_id=getattr(args, "patient_id", None) or "",
            accession_number=getattr(args, "accession", None) or "",
            transaction=getattr(args, "transaction", None) or "",
            detail={"command": f"oversight {view}", "criteria": criteria},
        ),
    )
