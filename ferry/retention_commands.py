"""`ferry retention ...`: periods, holds, the plan of what the next sweeps delete, a sweep now."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

from audit.trail import AuditRecord, record
from ferry.admin_commands import _say, _table, _when
from ferry.settings import Settings
from foundation.clock import as_utc
from foundation.errors import FerryError, NotFound

ACTOR = "cli"
Command = Callable[[Any, Settings, argparse.Namespace], int]


def _running(command: Command) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from ferry.app import build_archive, configure_libraries

        configure_libraries(settings)
        archive = build_archive(settings)
        try:
            return command(archive, settings, args)
        except FerryError as error:
            print(f"ferry retention: {error}", file=sys.stderr)
            return 1
        finally:
            archive.engine.dispose()

    return run


def _institution(archive: Any, code: str) -> int:
    from policy import store

    return store.find_institution(archive.engine, code).pk or 0


def _audit(archive: Any, action: str, institution_pk: int | None, **detail: object) -> None:
    record(
        archive.engine,
        AuditRecord(action=action, outcome="allowed", actor=ACTOR, actor_kind="system",
                    institution_pk=institution_pk, rule="command-line", detail=detail),
    )  # fmt: skip


# --- periods ---------------------------------------------------------------------------------


def show_policy(archive: Any, settings: Settings, args: argparse.Namespace) -> int:
    from exchange.retention_terms import read_policy, terms_of

    institution_pk = _institution(archive, args.institution)
    row = read_policy(archive.engine, institution_pk)
    terms = terms_of(row, settings.retention_defaults())
    own = {name: getattr(row, name, None) for name in ("worklist_days", "node_days",
                                                       "upload_days", "warn_days")}  # fmt: skip
    rows = [
        (name, getattr(terms, name), "own" if own[name] is not None else "default") for name in own
    ]
    _table(rows, ("setting", "days", "from"))
    print(f"ceiling  {settings.retention_max_days}  system")
    return 0


def set_policy(archive: Any, settings: Settings, args: argparse.Namespace) -> int:
    from exchange.retention_terms import POLICY_FIELDS
    from exchange.retention_terms import set_policy as store_policy

    institution_pk = _institution(archive, args.institution)
    changes = {
        name: getattr(args, name) for name in POLICY_FIELDS if getattr(args, name) is not None
    }
    for name in args.default or ():
        changes[name.replace("-", "_") + "_days"] = None
    if not changes:
        raise FerryError("nothing to change: give --worklist-days, --node-days, ... or --default")
    store_policy(archive.engine, institution_pk, changes, settings.retention_defaults(),
                 actor=ACTOR, now=datetime.now(UTC))  # fmt: skip
    _audit(archive, "retention-policy", institution_pk, changes=changes)
    return show_policy(archive, settings, args)


# --- holds -----------------------------------------------------------------------------------


def _end_of(text: str) -> datetime:
    """A date (the hold ends at the end of that day, UTC) or an ISO date and time."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time.max, UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return as_utc(moment)


def place(archive: Any, _settings: Settings, args: argparse.Namespace) -> int:
    from exchange.holds import NewHold, holders_of, place_hold

    institution_pk = _institution(archive, args.institution)
    now = datetime.now(UTC)
    if args.study:
        access = archive.read_study_access(args.study)
        if access is None or institution_pk not in holders_of(
            access.institution_pk, access.grants, now
        ):
            raise NotFound(f"institution {args.institution} holds no study {args.study}")
    new = NewHold(institution_pk, args.reason, args.until, args.study or "",
                  args.patient or "", args.issuer or "")  # fmt: skip
    hold = place_hold(archive.engine, new, actor=ACTOR, now=now)
    _audit(archive, "retention-hold", institution_pk, hold_pk=hold.pk, reason=hold.reason,
           until=hold.until.isoformat(), study_uid=hold.study_instance_uid,
           patient_id=hold.patient_id)  # fmt: skip
    print(hold.pk)
    _say(f"hold {hold.pk} placed until {_when(hold.until)}")
    return 0


def release(archive: Any, _settings: Settings, args: argparse.Namespace) -> int:
    from exchange.holds import get_hold, release_hold

    before = get_hold(archive.engine, args.hold)
    hold = release_hold(archive.engine, args.hold, actor=ACTOR, now=datetime.now(UTC))
    if before.released_at is None:
        _audit(archive, "retention-release", hold.institution_pk, hold_pk=hold.pk)
    _say(f"hold {hold.pk} released")
    return 0


def list_holds(archive: Any, _settings: Settings, args: argparse.Namespace) -> int:
    from exchange.holds import list_holds as read_holds

    scope = [_institution(archive, args.institution)] if args.institution else None
    now = datetime.now(UTC)
    rows = [
        (h.pk, h.institution_pk, h.study_instance_uid or f"patient {h.patient_id}",
         _when(h.until), "released" if h.released_at else "live", h.reason[:40])
        for h in read_holds(archive.engine, scope, live_only=not args.all, now=now)
    ]  # fmt: skip
    _table(rows, ("pk", "institution", "covers", "until", "state", "reason"))
    return 0


# --- sweeping --------------------------------------------------------------------------------


def _sweeper(archive: Any, settings: Settings) -> Any:
    from foundation.clock import utc_now
    from retention.sweeper import Sweeper

    return Sweeper(archive, settings.retention(), utc_now)


def plan(archive: Any, settings: Settings, args: argparse.Namespace) -> int:
    """A dry run: what the next sweeps delete, and when, as of now; nothing is changed."""
    from retention.plan import plan_rows

    institution_pk = _institution(archive, args.institution) if args.institution else None
    rows = plan_rows(_sweeper(archive, settings), datetime.now(UTC), institution_pk, args.days)
    _table([(r.due, r.what, r.study_uid, r.holder) for r in rows],
           ("due", "what", "study", "holder"))  # fmt: skip
    return 0


def run(archive: Any, settings: Settings, _args: argparse.Namespace) -> int:
    report = _sweeper(archive, settings).run()
    print(report.describe())
    return 0 if report.ran else 3


def audit_report(archive: Any, settings: Settings, args: argparse.Namespace) -> int:
    from retention.audit_age import count_older, prune_older

    days, now = settings.audit_retention_days, datetime.now(UTC)
    older, oldest = count_older(archive.engine, now, days)
    print(f"audit events older than {days} days: {older}")
    print(f"oldest event: {_when(oldest) if oldest else 'none'}")
    if args.prune:
        pruned = prune_older(archive.engine, now, days, actor=ACTOR)
        print(f"pruned {pruned.removed} events; the chain now starts after {pruned.start}")
    return 0


def add_retention_commands(commands: Any) -> None:
    group = commands.add_parser("retention", help="retention periods, holds and deletion")
    sub = group.add_subparsers(dest="retention_command", required=True)

    def add(name: str, command: Command, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=text)
        parser.set_defaults(run=_running(command))
        return parser

    policy = sub.add_parser("policy", help="an institution's retention periods")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    parser = add("show", show_policy, "the periods in force", policy_sub)
    parser.add_argument("--institution", metavar="CODE", required=True)
    parser = add("set", set_policy, "change periods (days; the system ceiling applies)", policy_sub)
    parser.add_argument("--institution", metavar="CODE", required=True)
    for name in ("worklist", "node", "upload", "warn"):  # --worklist-days ...
        parser.add_argument(f"--{name}-days", dest=f"{name}_days", type=int, metavar="N")
    kinds = ["worklist", "node", "upload", "warn"]
    parser.add_argument(
        "--default", action="append", choices=kinds, help="back to the system default (repeatable)"
    )
    parser = add("hold", place, "keep a study, or a patient's studies, until a date")
    parser.add_argument("--institution", metavar="CODE", required=True)
    covered = parser.add_mutually_exclusive_group(required=True)
    covered.add_argument("--study", metavar="UID")
    covered.add_argument("--patient", metavar="ID")
    parser.add_argument("--issuer", metavar="ISSUER", help="issuer of the patient ID")
    parser.add_argument("--reason", required=True)
    parser.add_argument("--until", type=_end_of, required=True, metavar="YYYY-MM-DD")
    parser = add("release", release, "end a hold now")
    parser.add_argument("hold", type=int, metavar="HOLD")
    parser = add("holds", list_holds, "holds in force (--all: released and ended too)")
    parser.add_argument("--institution", metavar="CODE")
    parser.add_argument("--all", action="store_true")
    parser = add("plan", plan, "what the next sweeps will delete (a dry run)")
    parser.add_argument("--institution", metavar="CODE")
    parser.add_argument("--days", type=int, default=7, help="look this far ahead (default 7)")
    add("run", run, "sweep now (exit status 3 when another sweep is running)")
    parser = add("audit", audit_report, "audit events past FERRY_AUDIT_RETENTION_DAYS")
    parser.add_argument(
        "--prune", action="store_true", help="remove them (export them first: irreversible)"
    )
