"""`ferry request create|list|show|answer|reject|cancel`: requests from the command line.

Each command acts as a user (`--as EMAIL`) with that user's rights now, through the same
workflow, decisions and audit trail as the JSON API (`exchange.requests`).
"""

from __future__ import annotations

import argparse
from typing import Any

from ferry.exchange_commands import (
    _enqueue,
    _pacs,
    _pk,
    _print_history,
    _setup,
    with_user,
)
from ferry.patient_id_argument import add_patient_id
from ferry.settings import Settings


def _line(request: Any) -> str:
    node = "" if request.destination_node_pk is None else f" node {request.destination_node_pk}"
    return (
        f"{request.public_id}  {request.status:<15} {request.urgency:<7} "
        f"from {request.requesting_institution_pk} to {request.asked_institution_pk}{node}"
        f"  patient {request.patient_id or request.patient_name}  {request.status_reason}"
    )


def _create(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.destinations import node_of
    from exchange.request_models import Urgency
    from exchange.requests import NewRequest, create_request

    archive, actor, policy = _setup(settings, args)
    requesting = _pk(policy, args.institution)
    new = NewRequest(
        requesting_pk=requesting,
        asked_pk=_pk(policy, args.ask),
        node_pk=node_of(policy, requesting, args.node) if args.node else None,
        patient_id=args.patient_id,
        issuer_of_patient_id=args.issuer,
        patient_name=args.patient_name,
        patient_birth_date=args.birth_date,
        patient_sex=args.sex,
        accession_numbers=args.accession,
        study_date_from=args.date_from,
        study_date_to=args.date_to,
        modalities=args.modality,
        body_part=args.body_part,
        details=args.details,
        clinical_reason=args.reason,
        urgency=Urgency(args.urgency),
    )
    request = create_request(archive.engine, actor, new, policy, settings.request_expiry_days)
    print(_line(request))
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import case
    from sqlmodel import Session, col, select

    from exchange.request_models import ImagingRequest
    from exchange.request_parties import visible_to

    archive, actor, _ = _setup(settings, args)
    query = select(ImagingRequest).where(visible_to(actor.principal))
    if args.status:
        query = query.where(ImagingRequest.status == args.status)
    urgent_first = case((col(ImagingRequest.urgency) == "urgent", 0), else_=1)
    order = (urgent_first, col(ImagingRequest.created_at).desc(), col(ImagingRequest.pk).desc())
    with Session(archive.engine) as session:
        for request in session.exec(query.order_by(*order).limit(200)):
            print(_line(request))
    return 0


def _show(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.request_parties import read_history, require
    from policy.roles import Action

    archive, actor, _ = _setup(settings, args)
    request = require(archive.engine, actor, Action.SEARCH, args.id)
    print(_line(request))
    for line in (request.details, request.clinical_reason):
        if line:
            print(f"  {line}")
    _print_history(read_history(archive.engine, request.pk or 0), 15)
    return 0


def _answer(settings: Settings, args: argparse.Namespace) -> int:
    from exchange import answers, requests
    from exchange.destinations import node_of
    from exchange.request_parties import require
    from policy.roles import Action

    archive, actor, policy = _setup(settings, args)
    if args.nothing_found:
        print(_line(requests.answer_nothing_found(archive.engine, actor, args.id, args.reason)))
        return 0
    request = require(archive.engine, actor, Action.ANSWER, args.id)
    picks = [answers.Pick(uid) for uid in args.study]
    for item in args.from_node:
        ae_title, _, uid = item.partition(":")
        picks.append(answers.Pick(uid, node_of(policy, request.asked_institution_pk, ae_title)))
    answered = answers.answer_request(
        archive, actor, args.id, picks, policy, _enqueue(settings), _pacs(settings, archive),
        settings.fetch_max_attempts,
    )  # fmt: skip
    print(_line(answered))
    if answered.status == "in-progress":
        print(f"{answered.status_reason} (by the job worker of `ferry serve`)")
    return 0


def _close(settings: Settings, args: argparse.Namespace) -> int:
    from exchange import requests

    archive, actor, _ = _setup(settings, args)
    if args.request_command == "reject":
        request = requests.reject_request(archive.engine, actor, args.id, args.reason)
    else:
        request = requests.cancel_request(archive.engine, actor, args.id, args.reason)
    print(_line(request))
    return 0


def add_request_commands(commands: Any) -> None:
    request = commands.add_parser("request", help="requests for imaging, and their answers")
    sub = request.add_subparsers(dest="request_command", required=True)
    create = with_user(sub.add_parser("create", help="ask another institution for imaging"))
    create.add_argument("--institution", required=True, help="your institution's code")
    create.add_argument("--ask", required=True, help="the asked institution's code")
    create.add_argument("--node", help="AE title of your node for the answer (default: worklist)")
    add_patient_id(create, default="")
    create.add_argument("--issuer", default="", help="Issuer of Patient ID")
    create.add_argument("--patient-name", default="", help="DICOM PN: Family^Given")
    create.add_argument("--birth-date", default="", help="YYYYMMDD")
    create.add_argument("--sex", default="", choices=["", "M", "F", "O"])
    create.add_argument("--accession", action="append", default=[])
    create.add_argument("--date-from", default="", help="YYYYMMDD")
    create.add_argument("--date-to", default="", help="YYYYMMDD")
    create.add_argument("--modality", action="append", default=[])
    create.add_argument("--body-part", default="")
    create.add_argument("--details", default="", help='what is wanted ("all priors for ...")')
    create.add_argument("--reason", default="", help="the clinical reason")
    create.add_argument("--urgency", choices=["routine", "urgent"], default="routine")
    create.set_defaults(run=_create)
    listing = with_user(sub.add_parser("list", help="requests you made or may answer"))
    listing.add_argument("--status")
    listing.set_defaults(run=_list)
    show = with_user(sub.add_parser("show", help="a request and its history"))
    show.add_argument("id")
    show.set_defaults(run=_show)
    answer = with_user(sub.add_parser("answer", help="answer with studies, or nothing found"))
    answer.add_argument("id")
    answer.add_argument("--study", action="append", default=[], help="a study in Ferry")
    answer.add_argument(
        "--from-node", action="append", default=[], metavar="AE:UID", help="a study on a node"
    )
    answer.add_argument("--nothing-found", action="store_true")
    answer.add_argument("--reason", default="")
    answer.set_defaults(run=_answer)
    for name in ("reject", "cancel"):
        action = with_user(sub.add_parser(name, help=f"{name} a request"))
        action.add_argument("id")
        action.add_argument("--reason", default="", required=name == "reject")
        action.set_defaults(run=_close)
