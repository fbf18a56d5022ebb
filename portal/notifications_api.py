"""The admin JSON API, notifications: your own choice of emails, and the record of emails sent.

`/me/notifications` is the signed-in person's own setting (people only: API clients and nodes
get no email). `/notifications` lists the emails of institutions one administers, as the
policy decides (`Access.require_code`, `Access.administered`), like transfers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session
from starlette.exceptions import HTTPException

from audit.trail import AuditRecord, record
from exchange import notify_job
from exchange.notification_models import Notification, NotificationChoice, NotificationPreference
from exchange.recipients import set_choice
from policy.principal import PrincipalKind
from portal.admin_access import Access
from portal.api_schemas import NotificationOut, NotificationQuery, NotificationsIn, NotificationsOut
from portal.openapi import Call, Operation

PREFERENCE_ACTION = "notification-preference"


def _engine(call: Call) -> Engine:
    engine: Engine = call.state.archive.engine
    return engine


def _person(call: Call) -> int:
    principal = call.principal
    if principal.kind is not PrincipalKind.USER or principal.id is None:
        raise HTTPException(403, "only people have notification settings; sign in as a person")
    return principal.id


def _out(call: Call, user_pk: int) -> NotificationsOut:
    with Session(_engine(call)) as session:
        row = session.get(NotificationPreference, user_pk)
    return NotificationsOut(
        choice=NotificationChoice(row.choice) if row else NotificationChoice.OWN,
        default=row is None,
        choices=list(NotificationChoice),
        sending=call.state.portal.mail_sending,
    )


def get_my_notifications(call: Call) -> NotificationsOut:
    return _out(call, _person(call))


def set_my_notifications(call: Call) -> NotificationsOut:
    user_pk = _person(call)
    body: NotificationsIn = call.body
    engine = _engine(call)
    set_choice(engine, user_pk, body.choice, call.now)
    request = call.request
    record(
        engine,
        AuditRecord(
            action=PREFERENCE_ACTION,
            outcome="allowed",
            actor=call.principal.label,
            actor_kind=call.principal.kind.value,
            client_address=request.client.host if request.client else "",
            detail={"choice": body.choice.value},
        ),
    )
    return _out(call, user_pk)


def list_notifications(call: Call) -> list[NotificationOut]:
    """One institution's (refused with 403/404 like the rest), else all one administers."""
    access = Access(call)
    query: NotificationQuery = call.query
    scope = access.oversight_scope(query.institution)
    rows = notify_job.list_notifications(_engine(call), scope, query.status, query.limit)
    return [_notification_out(access, row) for row in rows]


def _notification_out(access: Access, row: Notification) -> NotificationOut:
    values: dict[str, Any] = row.model_dump()
    values["institution"] = access.code_of(row.institution_pk or 0)
    return NotificationOut.model_validate(values)


_N = "notifications"
OPERATIONS: list[Operation] = [
    Operation("GET", "/me/notifications", get_my_notifications,
              "which emails you get (default: own)", _N, response=NotificationsOut),
    Operation("PUT", "/me/notifications", set_my_notifications,
              "choose which emails you get: all, own, failures or none", _N, NotificationsIn,
              NotificationsOut),
    Operation("GET", "/notifications", list_notifications,
              "emails about institutions you administer, newest first, sent or recorded", _N,
              response=list[NotificationOut], query=NotificationQuery),
]  # fmt: skip
