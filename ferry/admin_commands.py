"""`ferry admin ...`: bootstrap and scripting of who is who, nodes, routes, grants and jobs.

Secrets (a generated password, an API token) are printed once, on stdout, and never stored in
clear; everything else a command says goes to stderr, so `TOKEN=$(ferry admin ...)` just works.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from ferry.settings import Settings
from foundation.errors import FerryError

DEMO_INSTITUTION = "DEMO"
DEMO_ADMIN = "admin@ferry.local"
DEMO_ROLES = "admin,sender,receiver,viewer,requester,auditor"

Command = Callable[[Engine, argparse.Namespace], int]


def _engine(settings: Settings) -> Engine:
    from ferry.database import create_database_engine, migrate

    engine = create_database_engine(settings)
    migrate(engine)
    return engine


def _running(command: Command) -> Callable[[Settings, argparse.Namespace], int]:
    """Open the database, run, and turn a refusal into a message and exit status 1."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        args.settings = settings
        engine = _engine(settings)
        try:
            return command(engine, args)
        except FerryError as error:
            print(f"ferry admin: {error}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()

    return run


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [list(header), *[[str(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _expiry(days: int | None) -> datetime | None:
    return datetime.now(UTC) + timedelta(days=days) if days else None


def _institution_pk(engine: Engine, code: str) -> int:
    from policy import store

    return store.find_institution(engine, code).pk or 0


def create_institution(engine: Engine, args: argparse.Namespace) -> int:
    from policy import store

    parent = _institution_pk(engine, args.parent) if args.parent else None
    timezone = args.timezone or (
        store.get_institution(engine, parent).timezone if parent else "UTC"
    )
    made = store.create_institution(
        engine, args.code, args.name, timezone=timezone, contact=args.contact, parent_pk=parent
    )
    _say(f"created institution {made.code} ({made.name}, {made.timezone})")
    return 0


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated): given, prompted for, or a random one to print once."""
    if args.password is not None:
        return args.password, False
    if args.prompt_password:
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise FerryError("the passwords differ")
        return first, False
    return secrets.token_urlsafe(15), True


def create_user(engine: Engine, args: argparse.Namespace) -> int:
    from policy import store

    if args.institution and not args.roles:
        raise FerryError("--institution needs --roles (e.g. --roles sender,receiver)")
    institution = _institution_pk(engine, args.institution) if args.institution else None
    password, generated = _password(args)
    user = store.create_user(
        engine, args.email, name=args.name, password=password, system_admin=args.system_admin
    )
    if institution is not None:
        store.set_membership(engine, user.pk or 0, institution, args.roles)
    kind = "system administrator" if args.system_admin else f"member of {args.institution}"
    _say(f"created user {user.email} ({kind})")
    if generated:
        _say("password (shown once):")
        print(password)
    return 0


def create_api_client(engine: Engine, args: argparse.Namespace) -> int:
    from policy import store

    institution = _institution_pk(engine, args.institution)
    client = store.create_api_client(engine, args.name, institution, args.roles)
    issued = store.issue_api_token(engine, client.pk or 0, args.scopes, _expiry(args.expires_days))
    _say(f"created API client {client.pk} {client.name!r}; its token (shown once):")
    print(issued.token)
    return 0


def grant(engine: Engine, args: argparse.Namespace) -> int:
    from exchange import grants

    institution = _institution_pk(engine, args.institution)
    view = grants.grant_study(
        engine,
        args.study,
        institution,
        expires_at=_expiry(args.expires_days),
        reason=args.reason,
        actions=args.actions.split(","),
    )
    until = view.expires_at.isoformat() if view.expires_at else "revoked"
    what = ", ".join(view.actions)
    _say(f"grant {view.pk}: {args.institution} may {what} study {view.study_uid} until {until}")
    return 0


def revoke_grant(engine: Engine, args: argparse.Namespace) -> int:
    from exchange import grants

    revoked = grants.revoke_grants(engine, args.study, _institution_pk(engine, args.institution))
    if not revoked:
        raise FerryError(f"{args.institution} holds no live grant on study {args.study}")
    _say(f"revoked {len(revoked)} grant(s) of {args.institution} on study {args.study}")
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _node_of(engine: Engine, ae_title: str, institution_pk: int, code: str) -> int:
    """A node named by AE title on the command line, which must be the institution's own."""
    from policy.store.destinations import find_node

    node = find_node(engine, ae_title)
    if node.institution_pk != institution_pk:
        raise FerryError(f"node {node.ae_title} does not belong to {code}")
    return node.pk or 0


def add_node(engine: Engine, args: argparse.Namespace) -> int:
    """`--query`/`--write` set the node's rights and let its own institution query or write it."""
    from policy import store
    from policy.decision import NodeFacts

    institution = _institution_pk(engine, args.institution)
    ris = None
    if args.reconcile_with:
        ris = _node_of(engine, args.reconcile_with, institution, args.institution)
    facts = NodeFacts(
        pk=0,
        institution_pk=institution,
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        tls=args.tls,
        description=args.description,
        restricted=not args.unrestricted,
        can_query=args.query,
        can_write=args.write,
        move_destination=args.move_destination,
        retrieve_method=args.retrieve_method,
        worklist=args.worklist,
        reconcile_with_pk=ris,
        any_address=args.any_address,
    )
    node = store.create_node(engine, facts)
    if args.query or args.write:
        store.add_node_permission(
            engine,
            node.pk or 0,
            "institution",
            args.institution,
            can_query=args.query,
            can_write=args.write,
        )
    _say(f"added node {node.pk} {node.ae_title} at {node.host}:{node.port}")
    return 0


def list_nodes(engine: Engine, args: argparse.Namespace) -> int:
    from policy import store

    scope = [_institution_pk(engine, args.institution)] if args.institution else None
    codes = {i.pk: i.code for i in store.list_institutions(engine)}
    nodes = store.list_nodes(engine, scope)
    titles = {n.pk: n.ae_title for n in store.list_nodes(engine)}
    rows = [
        (
            n.pk,
            codes.get(n.institution_pk),
            n.ae_title,
            f"{n.host}:{n.port}",
            *(_yes(f) for f in (n.can_query, n.can_write, n.move_destination, n.worklist, n.tls)),
            _yes(n.restricted),
            n.retrieve_method,
            titles.get(n.reconcile_with_pk, "-"),
            _yes(n.any_address),
        )
        for n in nodes
    ]
    header = ("pk", "institution", "ae_title", "address", "query", "write", "move-destination")
    more = ("worklist", "tls", "restricted", "retrieve", "reconcile-with", "any-address")
    _table(rows, (*header, *more))
    return 0


def add_route(engine: Engine, args: argparse.Namespace) -> int:
    from policy.store.destinations import create_route

    own = args.settings.dicom_ae_title
    if args.ae_title.strip() == own:
        raise FerryError(f"{own!r} is Ferry's own AE title (FERRY_DICOM_AE_TITLE); pick another")
    institution = _institution_pk(engine, args.to)
    node = _node_of(engine, args.node, institution, args.to) if args.node else None
    route = create_route(
        engine,
        args.ae_title,
        institution,
        destination_node_pk=node,
        quiet_seconds=args.quiet_seconds,
        accept_unknown_callers=args.accept_unknown_callers,
        description=args.description,
    )
    target = f"node {args.node.strip()}" if node else "its worklist"
    _say(
        f"added route {route.pk}: studies sent to {route.called_ae_title} go to {args.to}, "
        f"{target}, {route.quiet_seconds} s after their last instance"
    )
    return 0


def list_routes(engine: Engine, args: argparse.Namespace) -> int:
    from policy import store
    from policy.store.destinations import list_routes as read_routes

    scope = [_institution_pk(engine, args.institution)] if args.institution else None
    codes = {i.pk: i.code for i in store.list_institutions(engine)}
    titles = {n.pk: n.ae_title for n in store.list_nodes(engine)}
    rows = [
        (
            r.pk,
            r.called_ae_title,
            codes.get(r.destination_institution_pk),
            titles.get(r.destination_node_pk, "worklist"),
            r.quiet_seconds,
            _yes(r.accept_unknown_callers),
            r.description,
        )
        for r in read_routes(engine, scope)
    ]
    header = ("pk", "called_ae_title", "to", "node", "quiet_seconds", "unknown-callers")
    _table(rows, (*header, "description"))
    return 0


def remove_route(engine: Engine, args: argparse.Namespace) -> int:
    from policy.store.destinations import delete_route, find_route

    route = find_route(engine, args.ae_title)
    delete_route(engine, route.pk or 0)
    _say(f"removed route {route.pk} {route.called_ae_title}")
    return 0


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _check_status(given: str | None, known: Sequence[str]) -> None:
    if given is not None and given not in known:
        raise FerryError(f"status {given!r} is not one of {', '.join(known)}")


def list_jobs(engine: Engine, args: argparse.Namespace) -> int:
    from foundation.jobs import JobQueue, JobStatus

    _check_status(args.status, [s.value for s in JobStatus])
    jobs = JobQueue(engine).list(args.status, args.kind, args.limit)
    rows = [
        (
            j.pk,
            j.kind,
            j.status,
            f"{j.attempts}/{j.max_attempts}",
            _when(j.run_after),
            _one_line(j.last_error) or "-",
        )
        for j in jobs
    ]
    _table(rows, ("pk", "kind", "status", "attempts", "run_after", "last_error"))
    return 0


def retry_job(engine: Engine, args: argparse.Namespace) -> int:
    from foundation.jobs import JobQueue

    queue = JobQueue(engine)
    if not queue.retry(args.pk, {"as_sent": True} if args.as_sent else None):
        job = queue.get(args.pk)
        if job is None:
            raise FerryError(f"no job {args.pk}")
        raise FerryError(f"job {args.pk} is {job.status}; only parked jobs are retried")
    _say(f"job {args.pk} is queued again, its attempts counted afresh")
    return 0


def list_transfers(engine: Engine, args: argparse.Namespace) -> int:
    from exchange.models import TransferStatus
    from exchange.transfers import list_transfers as read_transfers
    from policy import store

    _check_status(args.status, [s.value for s in TransferStatus])
    scope = [_institution_pk(engine, args.institution)] if args.institution else None
    codes = {i.pk: i.code for i in store.list_institutions(engine)}
    titles = {n.pk: n.ae_title for n in store.list_nodes(engine)}
    rows = [
        (
            t.pk,
            t.study_instance_uid,
            codes.get(t.sender_institution_pk),
            codes.get(t.destination_institution_pk),
            titles.get(t.destination_node_pk, "worklist"),
            t.status,
            t.instances,
            _when(t.last_instance_at),
            _one_line(t.reason) or "-",
        )
        for t in read_transfers(engine, scope, args.status, args.limit)
    ]
    header = ("pk", "study", "from", "to", "node", "status", "instances", "last_instance")
    _table(rows, (*header, "reason"))
    return 0


def list_users(engine: Engine, args: argparse.Namespace) -> int:
    from policy import store

    scope = [_institution_pk(engine, args.institution)] if args.institution else None
    codes = {i.pk: i.code for i in store.list_institutions(engine)}
    rows = []
    for user in store.list_users(engine, scope):
        roles = store.load_memberships(engine, user.pk or 0)
        memberships = " ".join(
            f"{codes.get(pk)}:{','.join(sorted(r.value for r in rs))}" for pk, rs in roles.items()
        )
        admin = "system-admin" if user.system_admin else ""
        rows.append((user.pk, user.email, user.status.value, admin, memberships))
    _table(rows, ("pk", "email", "status", "system", "memberships"))
    return 0


def list_institutions(engine: Engine, _args: argparse.Namespace) -> int:
    from policy import store

    institutions = store.list_institutions(engine)
    codes = {i.pk: i.code for i in institutions}
    rows = [(i.pk, i.code, i.name, i.timezone, codes.get(i.parent_pk, "")) for i in institutions]
    _table(rows, ("pk", "code", "name", "timezone", "parent"))
    return 0


def bootstrap_demo(engine: Engine) -> str | None:
    """A demo institution and its administrator; the password only when the admin is new."""
    from policy import store

    try:
        demo = store.find_institution(engine, DEMO_INSTITUTION)
    except store.UnknownRecord:
        demo = store.create_institution(engine, DEMO_INSTITUTION, "Demo Hospital")
    try:
        store.find_user(engine, DEMO_ADMIN)
        return None
    except store.UnknownRecord:
        pass
    password = secrets.token_urlsafe(15)
    admin = store.create_user(
        engine, DEMO_ADMIN, name="Demo administrator", password=password, system_admin=True
    )
    store.set_membership(engine, admin.pk or 0, demo.pk or 0, DEMO_ROLES)
    return password


def _bootstrap_demo(engine: Engine, _args: argparse.Namespace) -> int:
    password = bootstrap_demo(engine)
    if password is None:
        _say(f"demo ready: institution {DEMO_INSTITUTION}, administrator {DEMO_ADMIN}")
        return 0
    _say(f"created institution {DEMO_INSTITUTION} and system administrator {DEMO_ADMIN}")
    _say("password (shown once, keep it):")
    print(password)
    return 0


def _days(text: str) -> int:
    days = int(text)
    if not 1 <= days <= 36500:
        raise argparse.ArgumentTypeError(f"{text} is not a number of days from 1 to 36500")
    return days


def _add(commands: Any, name: str, command: Command, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    parser.set_defaults(run=_running(command))
    return parser


def _rotate_keys(settings: Settings, _args: argparse.Namespace) -> int:
    from policy.tokens import open_key_ring, rotate_keys

    new = rotate_keys(settings.auth())
    print(f"new signing key {new.kid}; tokens signed by older keys stay valid until they expire")
    for key in open_key_ring(settings.auth()).jwks(new.created_at)["keys"]:
        print(f"  verifying with {key['kid']}")
    return 0


def add_admin_commands(top: Any) -> None:
    """Adds `ferry admin` and its who-is-who commands to `ferry`'s command list."""
    admin = top.add_parser("admin", help="bootstrap and scripting of who is who")
    commands = admin.add_subparsers(dest="admin_command", required=True)
    rotate = commands.add_parser("rotate-keys", help="start signing tokens with a new key")
    rotate.set_defaults(run=_rotate_keys)
    parser = _add(commands, "create-institution", create_institution, "add an institution")
    parser.add_argument("code")
    parser.add_argument("name")
    parser.add_argument("--timezone", help="IANA name; default UTC, or the parent's")
    parser.add_argument("--parent", metavar="CODE", help="make it a security institution")
    parser.add_argument("--contact", default="")
    parser = _add(commands, "create-user", create_user, "add a user")
    parser.add_argument("email")
    parser.add_argument("--name", default="")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password", help="default: a random one, printed once")
    secret.add_argument("--prompt-password", action="store_true")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--system-admin", action="store_true")
    who.add_argument("--institution", metavar="CODE")
    parser.add_argument("--roles", default="", help="e.g. admin or sender,receiver")
    parser = _add(commands, "create-api-client", create_api_client, "add an API client")
    parser.add_argument("name")
    parser.add_argument("--institution", metavar="CODE", required=True)
    parser.add_argument("--roles", required=True)
    parser.add_argument(
        "--scopes", default="read", help="read, write, download, transfer, delete, audit"
    )
    parser.add_argument("--expires-days", type=_days)
    for name, command, text in (
        ("grant", grant, "let an institution see a study"),
        ("revoke-grant", revoke_grant, "revoke an institution's grants on a study"),
    ):
        parser = _add(commands, name, command, text)
        parser.add_argument("--study", metavar="UID", required=True)
        parser.add_argument("--institution", metavar="CODE", required=True)
        if command is grant:
            parser.add_argument("--expires-days", type=_days)
            parser.add_argument("--reason", default="granted from the command line")
            parser.add_argument(
                "--actions",
                default="search,read-metadata,read-pixels,download",
                help="what the grant allows, of these four (never delete or store)",
            )
    _add_dimse_commands(commands)
    parser = _add(commands, "users", list_users, "list users")
    parser.add_argument("--institution", metavar="CODE")
    _add(commands, "institutions", list_institutions, "list institutions")
    _add(commands, "bootstrap-demo", _bootstrap_demo, "a demo institution and admin, once")


def _pk(text: str) -> int:
    pk = int(text)
    if not 1 <= pk <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text} is not a job number")
    return pk


def _limit(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 10000:
        raise argparse.ArgumentTypeError(f"{text} is not a count from 1 to 10000")
    return count


def _add_dimse_commands(commands: Any) -> None:
    """Nodes, direct-push routes, and what the job queue and transfers make of them."""
    parser = _add(commands, "add-node", add_node, "add a DICOM node")
    parser.add_argument("--institution", metavar="CODE", required=True)
    parser.add_argument("--ae-title", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--description", default="")
    parser.add_argument("--query", action="store_true", help="may query and retrieve (both ways)")
    parser.add_argument("--write", action="store_true", help="may store (both ways)")
    parser.add_argument("--move-destination", action="store_true", help="a C-MOVE may name it")
    parser.add_argument("--worklist", action="store_true", help="a RIS answering MWL C-FIND")
    for flag in ("--tls", "--unrestricted"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument(
        "--any-address",
        action="store_true",
        help="accept its associations from any address (behind NAT); by default only from --host",
    )
    parser.add_argument("--retrieve-method", choices=("move", "get"), default="move")
    parser.add_argument("--reconcile-with", metavar="AET", help="its RIS, asked before delivery")
    parser = _add(commands, "nodes", list_nodes, "list nodes and their rights")
    parser.add_argument("--institution", metavar="CODE")
    parser = _add(commands, "add-route", add_route, "add a direct-push route (a called AE)")
    parser.add_argument("--ae-title", metavar="CALLED_AET", required=True)
    parser.add_argument("--to", metavar="CODE", required=True, help="destination institution")
    parser.add_argument("--node", metavar="AET", help="its node to deliver to; default worklist")
    parser.add_argument("--quiet-seconds", metavar="N", type=int, default=30, help="1-86400; 30")
    parser.add_argument("--accept-unknown-callers", action="store_true")
    parser.add_argument("--description", default="")
    parser = _add(commands, "routes", list_routes, "list direct-push routes")
    parser.add_argument("--institution", metavar="CODE", help="routes into it")
    parser = _add(commands, "remove-route", remove_route, "remove a direct-push route")
    parser.add_argument("ae_title", metavar="CALLED_AET")
    parser = _add(commands, "jobs", list_jobs, "list jobs, newest first")
    parser.add_argument("--status", help="queued, running, done or parked")
    parser.add_argument("--kind")
    parser.add_argument("--limit", type=_limit, default=200)
    parser = _add(commands, "retry-job", retry_job, "queue a parked job again")
    parser.add_argument("pk", type=_pk)
    parser.add_argument(
        "--as-sent",
        action="store_true",
        help="deliver without worklist reconciliation (a person checked the study)",
    )
    parser = _add(commands, "transfers", list_transfers, "list transfers, newest first")
    parser.add_argument("--institution", metavar="CODE", help="as sender or destination")
    parser.add_argument("--status", help="e.g. collecting, delivering, delivered, failed")
    parser.add_argument("--limit", type=_limit, default=200)
