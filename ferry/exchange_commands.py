"""`ferry transfer ...`, `ferry worklist`, `ferry download`: transfers from the command line.

Each command acts as a user (`--as EMAIL`), with that user's rights now: the same workflows,
decisions and audit trail as the JSON API (`exchange.sending`, `exchange.worklist`, ...).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.settings import Settings
from foundation.errors import InvalidQuery


def _setup(settings: Settings, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from exchange.parties import Actor
    from ferry.app import build_archive, configure_libraries
    from policy.explain import user_principal
    from policy.store import snapshot

    configure_libraries(settings)
    archive = build_archive(settings)
    actor = Actor(user_principal(archive.engine, args.as_user), datetime.now(UTC), "", "cli")
    return archive, actor, snapshot(archive.engine)


def _pk(policy: Any, code: str) -> int:
    for pk, facts in policy.institutions.items():
        if facts.code == code:
            return int(pk)
    raise InvalidQuery(f"no institution {code!r}")


def _enqueue(settings: Settings) -> Any:
    import functools

    from dimse.forward import enqueue_forward

    return functools.partial(enqueue_forward, max_attempts=settings.forward_max_attempts)


def _pacs(settings: Settings, archive: Any) -> Any:
    """Ferry's Q/R SCU towards the institutions' nodes (C-FIND, C-MOVE/C-GET)."""
    from dimse.context import BridgeContext
    from dimse.request_peers import BridgePacs

    return BridgePacs(BridgeContext(settings.dimse(), archive))


def _print_history(changes: Any, width: int) -> None:
    for change in changes:
        print(f"  {change.at:%Y-%m-%d %H:%M:%S%z} {change.status:<{width}} {change.actor} "
              f"{change.reason}")  # fmt: skip


def _line(transfer: Any) -> str:
    return (
        f"{transfer.public_id}  {transfer.status:<12} {transfer.priority:<7} "
        f"from {transfer.sender_institution_pk} to {transfer.destination_institution_pk}"
        f"{'' if transfer.destination_node_pk is None else f' node {transfer.destination_node_pk}'}"
        f"  {transfer.reason}"
    )


def _create(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.destinations import node_of
    from exchange.models import Priority
    from exchange.sending import NewTransfer, create_transfer, send_transfer

    archive, actor, policy = _setup(settings, args)
    destination = _pk(policy, args.to)
    node = node_of(policy, destination, args.node) if args.node else None
    in_ferry = [] if args.from_node else args.study
    if args.profile and args.from_node:
        raise InvalidQuery("pseudonymised copies are made from studies in Ferry: fetch them first")
    new = NewTransfer(
        _pk(policy, args.institution), destination, node, in_ferry,
        Priority(args.priority), args.note, profile=args.profile, send_when_copied=args.send,
    )  # fmt: skip
    transfer = create_transfer(archive, actor, new, policy)
    if args.profile:
        print(_line(transfer))
        print(f"making pseudonymised copies of {len(in_ferry)} studies with profile "
              f"{args.profile} by the job worker of `ferry serve`"
              + ("; sent when they are in" if args.send else ""))  # fmt: skip
        return 0
    if args.from_node:
        from exchange.node_transfers import add_node_studies

        transfer = add_node_studies(
            archive.engine, actor, transfer.public_id, args.from_node, args.study, policy,
            send=args.send, max_attempts=settings.fetch_max_attempts,
        )  # fmt: skip
        print(_line(transfer))
        print(f"fetching {len(args.study)} studies from {args.from_node} by the job worker of "
              "`ferry serve`" + ("; sent when they are in" if args.send else ""))  # fmt: skip
        return 0
    if args.send:
        transfer = send_transfer(archive, actor, transfer.public_id, policy, _enqueue(settings))
    print(_line(transfer))
    return 0


def _search_node(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.node_transfers import search_node_studies

    archive, actor, policy = _setup(settings, args)
    keys = dict(item.partition("=")[::2] for item in args.key)
    found = search_node_studies(
        archive.engine,
        _pacs(settings, archive),
        actor,
        _pk(policy, args.institution),
        args.node,
        keys,
        policy,
    )
    for study in found:
        print(f"{study.study_uid}  {study.patient_id}  {study.patient_name}  {study.study_date}"
              f"  {study.accession_number}  {'/'.join(study.modalities)}")  # fmt: skip
    print(f"{len(found)} studies on {args.node}")
    return 0


def _act(settings: Settings, args: argparse.Namespace) -> int:
    from exchange import sending

    archive, actor, policy = _setup(settings, args)
    if args.transfer_command == "send":
        t = sending.send_transfer(archive, actor, args.id, policy, _enqueue(settings))
    elif args.transfer_command == "resend":
        t = sending.resend_transfer(archive, actor, args.id, policy, _enqueue(settings))
    else:
        t = sending.cancel_transfer(archive.engine, actor, args.id, args.reason)
    print(_line(t))
    return 0


def _show(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.history import read_history
    from exchange.parties import require
    from policy.roles import Action

    archive, actor, _ = _setup(settings, args)
    transfer = require(archive.engine, actor, Action.SEARCH, args.id)
    print(_line(transfer))
    _print_history(read_history(archive.engine, transfer.pk or 0), 12)
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    from sqlmodel import Session, col, select

    from exchange.models import Transfer
    from exchange.parties import visible_to
    from policy.roles import Action

    archive, actor, _ = _setup(settings, args)
    query = select(Transfer).where(visible_to(actor.principal, Action.SEARCH))
    if args.status:
        query = query.where(Transfer.status == args.status)
    with Session(archive.engine) as session:
        for transfer in session.exec(query.order_by(col(Transfer.pk).desc()).limit(200)):
            print(_line(transfer))
    return 0


def _worklist(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.worklist import WorklistQuery, search_worklist
    from policy.roles import Action

    archive, actor, policy = _setup(settings, args)
    pks = actor.principal.institutions_for(Action.SEARCH)
    if args.institution:
        pks = pks & {_pk(policy, args.institution)}
    total, rows = search_worklist(archive.engine, pks, WorklistQuery(limit=200))
    for transfer in rows:
        print(_line(transfer))
    print(f"{total} on the worklist")
    return 0


def _download(settings: Settings, args: argparse.Namespace) -> int:
    from exchange import sending
    from exchange.downloads import iter_zip, plan_zip, prepare_zip
    from exchange.models import TransferStatus
    from exchange.parties import audit_step, decide_on, require, side_of
    from exchange.receiving import (
        check_study_action,
        deliver_to_node,
        received_transfer_of,
        selected_studies,
    )
    from policy.roles import Action

    archive, actor, _ = _setup(settings, args)
    if args.transfer:
        transfer = require(archive.engine, actor, Action.DOWNLOAD, args.transfer)
    elif args.study:
        transfer = received_transfer_of(archive.engine, actor, args.study[0])
        print(f"from transfer {transfer.public_id}")
    else:
        raise InvalidQuery("name the transfer (--transfer ID) or a study (--study UID)")
    if args.to_node:
        delivered = deliver_to_node(archive, actor, transfer.public_id, args.to_node,
                                    _enqueue(settings), args.study)  # fmt: skip
        print(_line(delivered))
        return 0
    studies = selected_studies(archive, transfer, args.study)
    decision = check_study_action(archive, actor, transfer, Action.DOWNLOAD, studies)
    download = prepare_zip(archive, plan_zip(archive, studies), transfer.created_at)
    audit_step(archive.engine, actor, transfer, "download", decision, studies=studies, format="zip")
    with Path(args.zip).open("wb") as out:
        for chunk in iter_zip(archive, download):
            out.write(chunk)
    if side_of(decide_on(actor, Action.DOWNLOAD, transfer)) == "receiver":
        sending.note_received(archive.engine, actor, transfer, TransferStatus.DOWNLOADED)
    print(f"wrote {args.zip} ({download.length} bytes)")
    return 0


def with_user(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every exchange command acts as a user, with that user's rights now."""
    parser.add_argument("--as", dest="as_user", required=True, help="the acting user's email")
    return parser


def add_exchange_commands(commands: Any) -> None:
    transfer = commands.add_parser("transfer", help="transfers made by people")
    sub = transfer.add_subparsers(dest="transfer_command", required=True)
    create = with_user(sub.add_parser("create", help="a draft (or, with --send, sent at once)"))
    create.add_argument("--institution", required=True, help="the sending institution's code")
    create.add_argument("--to", required=True, help="the destination institution's code")
    create.add_argument("--node", help="AE title of a destination node (default: its worklist)")
    create.add_argument("--study", action="append", default=[], help="a Study Instance UID")
    create.add_argument(
        "--from-node", help="AE title of your institution's node the --study UIDs are fetched from"
    )
    create.add_argument("--priority", choices=["routine", "urgent"], default="routine")
    create.add_argument("--note", default="")
    create.add_argument("--send", action="store_true")
    create.add_argument(
        "--profile",
        help="a pseudonymisation profile of the sending institution: the destination gets "
        "pseudonymised copies of the --study UIDs, never the studies",
    )
    create.set_defaults(run=_create)
    search = with_user(sub.add_parser("search-node", help="studies on one of your nodes (C-FIND)"))
    search.add_argument("--institution", required=True, help="your institution's code")
    search.add_argument("--node", required=True, help="the node's AE title")
    search.add_argument("--key", action="append", default=[], help="KEYWORD=VALUE, e.g. "
                        "PatientID=123 or StudyDate=20240101-20241231")  # fmt: skip
    search.set_defaults(run=_search_node)
    for name in ("send", "resend", "cancel"):
        action = with_user(sub.add_parser(name, help=f"{name} a transfer"))
        action.add_argument("id")
        action.add_argument("--reason", default="")
        action.set_defaults(run=_act)
    show = with_user(sub.add_parser("show", help="a transfer and its history"))
    show.add_argument("id")
    show.set_defaults(run=_show)
    listing = with_user(sub.add_parser("list", help="transfers you sent or received"))
    listing.add_argument("--status")
    listing.set_defaults(run=_list)
    worklist = with_user(commands.add_parser("worklist", help="incoming transfers"))
    worklist.add_argument("--institution")
    worklist.set_defaults(run=_worklist)
    download = with_user(commands.add_parser("download", help="a transfer's studies"))
    download.add_argument("--transfer", help="the transfer's id (default: the newest received "
                          "transfer holding the first --study)")  # fmt: skip
    download.add_argument("--study", action="append", default=[],
                          help="a study of it, repeatable (default: all its studies)")  # fmt: skip
    target = download.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-node", help="AE title of a node of the receiving institution")
    target.add_argument("--zip", help="write a ZIP with a DICOMDIR to this file")
    download.set_defaults(run=_download)
