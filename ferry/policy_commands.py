"""`ferry policy explain` and `ferry policy what-if`: decisions as administrators read them."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import col

from archive.models import Study
from archive.store import Archive
from ferry.settings import Settings
from policy.decision import Context, Resource, decide
from policy.explain import describe_decision, user_principal
from policy.roles import Action, parse_roles
from policy.store import snapshot
from policy.store.institutions import find_institution
from policy.whatif import World, what_if


def _study_resource(archive: Archive, uid: str) -> Resource:
    access = archive.read_study_access(uid)
    if access is None:
        return Resource.study(uid, None)
    return Resource.study_from_rows(uid, access.institution_pk, access.grants)


def explain(archive: Archive, args: argparse.Namespace) -> int:
    engine = archive.engine
    principal = user_principal(engine, args.user)
    decision = decide(
        principal,
        Action(args.action),
        _study_resource(archive, args.study),
        Context(datetime.now(UTC)),
        snapshot(engine),
    )
    print(f"{principal.label} {args.action} study {args.study}")
    print(describe_decision(decision))
    return 0 if decision.allowed else 1


def _all_studies(archive: Archive) -> list[Resource]:
    with archive.engine.connect() as connection:
        uids = connection.execute(select(col(Study.study_instance_uid))).scalars().all()
    return [_study_resource(archive, uid) for uid in uids]


def what_if_membership(archive: Archive, args: argparse.Namespace) -> int:
    """Who gains and loses what if the user's roles in an institution were set to these."""
    engine = archive.engine
    before = user_principal(engine, args.user)
    institution = find_institution(engine, args.institution)
    memberships = dict(before.memberships)
    roles = parse_roles(args.roles)
    if roles:
        memberships[institution.pk] = roles  # type: ignore[index]
    else:
        memberships.pop(institution.pk, None)  # type: ignore[arg-type]
    after = dataclasses.replace(before, memberships=memberships)
    studies = _all_studies(archive)
    policy = snapshot(engine)
    changes = what_if(
        World([before], studies, policy),
        World([after], studies, policy),
        Context(datetime.now(UTC)),
    )
    for change in changes:
        print(change.describe())
    print(f"{len(changes)} change(s)")
    return 0


def add_policy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = run_policy_command
    policy = commands.add_parser("policy", help="explain decisions, try rule changes")
    sub = policy.add_subparsers(dest="policy_command", required=True)
    explain_parser = sub.add_parser("explain", help="the decision for a user, study and action")
    explain_parser.add_argument("--user", required=True, help="the user's email")
    explain_parser.add_argument("--study", required=True, help="StudyInstanceUID")
    explain_parser.add_argument("--action", required=True, choices=[a.value for a in Action])
    explain_parser.set_defaults(run=run, policy_run=explain)
    change = sub.add_parser("what-if", help="who gains and loses access if roles change")
    change.add_argument("--user", required=True)
    change.add_argument("--institution", required=True, help="institution code")
    change.add_argument("--roles", required=True, help="new roles, comma-separated; '' removes")
    change.set_defaults(run=run, policy_run=what_if_membership)


def run_policy_command(settings: Settings, args: argparse.Namespace) -> int:
    from ferry.app import build_archive, configure_libraries

    configure_libraries(settings)
    return int(args.policy_run(build_archive(settings), args))
