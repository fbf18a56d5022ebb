"""`ferry notifications ...`: a person's choice of emails, the record of emails, a test email."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from ferry.admin_commands import _add, _limit, _say, _table, _when
from foundation.errors import FerryError


def _user_pk(engine: Engine, email: str) -> int:
    from policy import store

    return store.find_user(engine, email).pk or 0


def show_choice(engine: Engine, args: argparse.Namespace) -> int:
    from exchange.recipients import read_choice

    print(read_choice(engine, _user_pk(engine, args.email)).value)
    return 0


def set_choice(engine: Engine, args: argparse.Namespace) -> int:
    from audit.trail import AuditRecord, record
    from exchange.notification_models import NotificationChoice
    from exchange.recipients import set_choice as store_choice

    user_pk = _user_pk(engine, args.email)
    choice = NotificationChoice(args.choice)
    store_choice(engine, user_pk, choice, datetime.now(UTC))
    record(
        engine,
        AuditRecord(
            action="notification-preference",
            outcome="allowed",
            actor="cli",
            actor_kind="system",
            detail={"user_pk": user_pk, "choice": choice.value},
        ),
    )
    _say(f"{args.email} now gets {choice.value!r} notification emails")
    return 0


def list_notifications(engine: Engine, args: argparse.Namespace) -> int:
    from exchange.notification_models import MailStatus
    from exchange.notify_job import list_notifications as read_notifications
    from policy import store

    if args.status is not None and args.status not in {s.value for s in MailStatus}:
        raise FerryError(f"status {args.status!r} is not one of {', '.join(MailStatus)}")
    scope = [store.find_institution(engine, args.institution).pk or 0] if args.institution else None
    status = MailStatus(args.status) if args.status else None
    rows = [
        (n.pk, n.job_pk, n.event, n.subject, n.email, n.status, _when(n.created_at))
        for n in read_notifications(engine, scope, status, args.limit)
    ]
    _table(rows, ("pk", "job", "event", "subject", "email", "status", "created_at"))
    return 0


def send_test(engine: Engine, args: argparse.Namespace) -> int:
    """Send one email now, outside the queue: checks the SMTP settings end to end."""
    from exchange.mail import Letter, compose
    from exchange.notifications import Priority
    from ferry.background import mail_sender, public_base

    settings = args.settings
    sender = mail_sender(settings)
    if sender is None:
        raise FerryError("FERRY_SMTP_HOST is not set: notifications are recorded, not sent")
    base = public_base(settings)
    letter = Letter(
        "Test email",
        "Ferry can send you notifications.",
        Priority.ROUTINE,
        base,
        f"{base}/api/me/notifications",
        "test",
    )
    connection = sender.open()
    try:
        sender.send(connection, compose(letter, settings.mail_from, args.email, datetime.now(UTC)))
    finally:
        sender.close(connection)
    _say(f"sent a test email to {args.email} through {sender.config.label}")
    return 0


def add_notification_commands(commands: Any) -> None:
    from exchange.notification_models import MailStatus, NotificationChoice

    group = commands.add_parser("notifications", help="notification emails")
    sub = group.add_subparsers(dest="notifications_command", required=True)
    parser = _add(sub, "show", show_choice, "which emails a person gets")
    parser.add_argument("email")
    parser = _add(sub, "set", set_choice, "choose which emails a person gets")
    parser.add_argument("email")
    parser.add_argument("choice", choices=[c.value for c in NotificationChoice])
    parser = _add(sub, "list", list_notifications, "emails sent or recorded, newest first")
    parser.add_argument("--institution", metavar="CODE")
    parser.add_argument("--status", help=", ".join(s.value for s in MailStatus))
    parser.add_argument("--limit", type=_limit, default=200)
    parser = _add(sub, "send-test", send_test, "send a test email now (checks FERRY_SMTP_*)")
    parser.add_argument("email")
