"""Notification emails, read off a real SMTP server: who gets what, what is in it, and retries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlmodel import Session, select

from audit.search import AuditQuery, iter_events
from exchange.models import Transfer, TransferStatus
from exchange.notification_models import MailStatus, Notification, NotificationChoice
from exchange.notifications import Event, EventKind, Priority, Subject, hears
from exchange.retention_terms import set_policy
from exchange.transfer_endings import note_study_deleted
from exchange.transfers import list_transfers, transfer_events
from ferry.background import describe_mail
from foundation.jobs import JobQueue
from policy import store
from policy.store.destinations import create_route
from retention.sweeper import Sweeper
from tests.conftest import free_port
from tests.exchange._smtp import self_signed, smtp_server
from tests.exchange._two_institutions import (
    SECRET,
    Ferry,
    add_node,
    build_ferry,
    push_study,
)


@pytest.fixture
def ferry(tmp_path: Path, database_url: str) -> Iterator[Ferry]:
    with smtp_server() as smtp:
        built = build_ferry(tmp_path, database_url, smtp)
        yield built
        built.archive.engine.dispose()


def _carries_no_patient_data(mail: Any) -> None:
    decoded = "\n".join(mail.texts().values())
    for secret in ("Secret", "Patient", "PID-SECRET-77", "ACC-SECRET-77", SECRET.study_uid):
        assert secret.encode() not in mail.raw and secret not in decoded, secret


def test_a_direct_push_on_the_worklist_tells_the_receivers_who_want_it(ferry, tmp_path):
    add_node(ferry, "PACS_A", ferry.a)
    store.update_institution(ferry.engine, ferry.b, worklist_restricted=False)
    route = create_route(ferry.engine, "FERRY_TO_B", ferry.b)
    ferry.person("b-all@b.test", {ferry.b: "viewer"}, "all")
    ferry.person("b-none@b.test", {ferry.b: "viewer"}, "none")
    ferry.person("b-own@b.test", {ferry.b: "viewer"})  # the default: own; a node pushed it
    ferry.person("b-asks@b.test", {ferry.b: "requester"}, "all")  # may not see B's studies
    ferry.person("a-all@a.test", {ferry.a: "sender"}, "all")  # A hears of a delivery, not this

    transfer_pk = push_study(ferry, tmp_path, route.pk)

    [mail] = ferry.mail_to("b-all@b.test")
    for nobody in ("b-none@b.test", "b-own@b.test", "b-asks@b.test", "a-all@a.test"):
        assert ferry.mail_to(nobody) == [], nobody
    assert mail.subject == "[Ferry] Transfer arrived at Institution B (B)"
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == "Ferry <ferry@ferry.test>" and message["To"] == "b-all@b.test"
    texts = mail.texts()
    assert set(texts) == {"text/plain", "text/html"}
    link = f"{ferry.settings.public_url}/portal/transfers/{transfer_pk}"
    assert "A study sent by Institution A (A) arrived at Institution B (B)." in texts["text/plain"]
    assert "Priority: routine" in texts["text/plain"] and link in texts["text/plain"]
    assert f'href="{link}"' in texts["text/html"]
    _carries_no_patient_data(mail)
    [sent] = iter_events(ferry.engine, AuditQuery(action="notify"))
    assert (sent.outcome, sent.actor, orjson.loads(sent.detail)["event"]) == (
        "allowed",
        "ferry",
        "transfer-arrived",
    )
    [job] = JobQueue(ferry.engine).list(kind="notify")
    assert job.status == "done" and job.result == "transfer-arrived: 1 sent"


def test_a_failed_forwarding_tells_the_senders_who_want_failures(ferry, tmp_path):
    add_node(ferry, "PACS_A", ferry.a)
    gone = add_node(ferry, "PACS_B", ferry.b, port=free_port())  # nothing listens there
    store.create_destination_rule(
        ferry.engine, ferry.b, node_pk=gone, sender_institution_pk=ferry.a
    )
    route = create_route(ferry.engine, "FERRY_TO_B_PACS", ferry.b, destination_node_pk=gone)
    ferry.person("a-failures@a.test", {ferry.a: "sender"}, "failures")
    ferry.person("a-all@a.test", {ferry.a: "viewer"}, "all")
    ferry.person("a-own@a.test", {ferry.a: "sender"})
    ferry.person("b-all@b.test", {ferry.b: "viewer"}, "all")

    transfer_pk = push_study(ferry, tmp_path, route.pk)

    [transfer] = list_transfers(ferry.engine)
    assert transfer.status == "failed"  # parked after FERRY_FORWARD_MAX_ATTEMPTS=1
    [mail] = ferry.mail_to("a-failures@a.test")
    assert mail.subject == "[Ferry] Transfer failed"
    assert f"/portal/transfers/{transfer_pk}" in mail.texts()["text/plain"]
    assert "could not be delivered" in mail.texts()["text/plain"]
    _carries_no_patient_data(mail)
    assert [m.subject for m in ferry.mail_to("a-all@a.test")] == ["[Ferry] Transfer failed"]
    assert ferry.mail_to("a-own@a.test") == [] and ferry.mail_to("b-all@b.test") == []


@pytest.mark.parametrize(
    ("owner_days", "status"), [(30, "expired"), (None, "deleted")],
    ids=["receivers-copy-ends-first", "both-copies-end-together"],
)  # fmt: skip
def test_a_transfer_nobody_took_before_it_ran_out_tells_the_senders(
    ferry, tmp_path, owner_days, status
):
    """B's worklist copy of a pushed study reaches the end of B's retention period unopened
    (A keeping its own copy longer, or both going at once, as with the default 15 days): the
    sending institution hears that it went unused (a failure); the receiver, warned before,
    hears nothing more."""
    if owner_days:
        defaults = ferry.settings.retention_defaults()
        set_policy(ferry.engine, ferry.a, {"upload_days": owner_days}, defaults, actor="test",
                   now=ferry.clock())  # fmt: skip
    add_node(ferry, "PACS_A", ferry.a)
    store.update_institution(ferry.engine, ferry.b, worklist_restricted=False)
    route = create_route(ferry.engine, "FERRY_TO_B", ferry.b)
    ferry.person("a-failures@a.test", {ferry.a: "sender"}, "failures")
    ferry.person("a-own@a.test", {ferry.a: "sender"})  # a node sent it, not them
    ferry.person("a-asks@a.test", {ferry.a: "requester"}, "all")  # may not see A's transfers
    ferry.person("b-all@b.test", {ferry.b: "viewer"}, "all")
    transfer_pk = push_study(ferry, tmp_path, route.pk)
    assert [m.subject for m in ferry.mail_to("b-all@b.test")] == [
        "[Ferry] Transfer arrived at Institution B (B)"
    ]

    ferry.clock.advance(timedelta(days=15, minutes=1).total_seconds())
    sweep = Sweeper(ferry.archive, ferry.settings.retention(), ferry.clock).run()
    assert (sweep.grants_removed, len(sweep.studies_deleted)) == ((1, 0) if owner_days else (0, 1))
    ferry.run()

    [transfer] = list_transfers(ferry.engine)
    assert transfer.status == status
    [mail] = ferry.mail_to("a-failures@a.test")
    assert mail.subject == "[Ferry] Transfer expired before Institution B (B) downloaded it"
    text = mail.texts()["text/plain"]
    assert "sent by Institution A (A) to Institution B (B) was neither downloaded" in text
    assert f"/portal/transfers/{transfer_pk}" in text
    _carries_no_patient_data(mail)
    assert ferry.mail_to("a-own@a.test") == ferry.mail_to("a-asks@a.test") == []
    assert len(ferry.mail_to("b-all@b.test")) == 1  # still only the arrival


@pytest.mark.parametrize("ended", [TransferStatus.EXPIRED, TransferStatus.DELETED])
@pytest.mark.parametrize("previous", list(TransferStatus))
def test_only_a_transfer_that_ran_out_before_anyone_took_it_is_told(previous, ended):
    transfer = Transfer(pk=7, sender_institution_pk=1, destination_institution_pk=2,
                        status=ended.value)  # fmt: skip
    told = [(e.kind, e.institution_pk) for e in transfer_events(transfer, ended, previous)]
    untaken = {TransferStatus.SENT, TransferStatus.ON_WORKLIST, TransferStatus.VIEWED}
    assert told == ([(EventKind.TRANSFER_EXPIRED, 1)] if previous in untaken else [])


def test_a_study_deleted_by_its_owner_tells_nobody_of_its_transfers(ferry, tmp_path):
    """A DELETE by a person is not a transfer running out: the worklist transfer it ends is
    deleted without an email."""
    add_node(ferry, "PACS_A", ferry.a)
    store.update_institution(ferry.engine, ferry.b, worklist_restricted=False)
    route = create_route(ferry.engine, "FERRY_TO_B", ferry.b)
    ferry.person("a-all@a.test", {ferry.a: "sender"}, "all")
    push_study(ferry, tmp_path, route.pk)
    ferry.archive.delete(SECRET.study_uid)
    note_study_deleted(ferry.engine, SECRET.study_uid, "a-all@a.test", ferry.clock())
    ferry.run()
    [transfer] = list_transfers(ferry.engine)
    assert transfer.status == "deleted"
    assert ferry.mail_to("a-all@a.test") == []


def test_own_means_what_the_person_did_or_what_is_about_them(ferry):
    asker = ferry.person("asker@a.test", {ferry.a: "requester"})
    ferry.person("colleague@a.test", {ferry.a: "requester"})
    ferry.person("watcher@a.test", {ferry.a: "requester"}, "all")
    ferry.person("failures@a.test", {ferry.a: "requester"}, "failures")
    answered = Event(
        EventKind.REQUEST_ANSWERED,
        ferry.a,
        Subject("request", 5),
        Priority.URGENT,
        person_user_pk=asker,
        counterpart_pk=ferry.b,
    )
    ferry.notify(answered)
    ferry.run()
    [mail] = ferry.mail_to("asker@a.test")
    assert mail.subject == "[Ferry] URGENT: Request answered by Institution B (B)"
    assert "Priority: urgent" in mail.texts()["text/plain"]
    assert len(ferry.mail_to("watcher@a.test")) == 1
    assert ferry.mail_to("colleague@a.test") == ferry.mail_to("failures@a.test") == []


@pytest.mark.parametrize(
    ("choice", "own", "failure", "heard"),
    [
        ("all", False, False, True),
        ("own", True, False, True),
        ("own", False, True, False),
        ("failures", False, True, True),
        ("failures", True, False, False),
        ("none", True, True, False),
    ],
)
def test_who_hears_what(choice, own, failure, heard):
    assert hears(NotificationChoice(choice), own=own, failure=failure) is heard


def test_a_refusing_or_vanished_smtp_server_loses_nothing(ferry):
    ferry.person("b-admin@b.test", {ferry.b: "admin"})
    ferry.notify(
        Event(EventKind.REQUEST_RECEIVED, ferry.b, Subject("request", 9), counterpart_pk=ferry.a),
        max_attempts=3,
    )
    queue = JobQueue(ferry.engine)
    assert ferry.smtp is not None
    ferry.smtp.mailbox.refuse = "554 5.7.1 Not today"
    ferry.run()
    [job] = queue.list(kind="notify")
    assert (job.status, job.attempts) == ("queued", 1) and "554 5.7.1 Not today" in job.last_error
    ferry.smtp.mailbox.refuse = None
    ferry.smtp.stop()
    for attempts in (2, 3):
        ferry.clock.advance(3600)
        ferry.run()
        job = queue.get(job.pk)
        assert job is not None and job.attempts == attempts
    assert job.status == "parked"  # where administrators see it: `ferry admin jobs`, /api/jobs
    assert ferry.mail_to("b-admin@b.test") == []
    failed = list(iter_events(ferry.engine, AuditQuery(action="notify", outcome="failed")))
    assert len(failed) == 3
    ferry.smtp.start()
    assert queue.retry(job.pk)
    ferry.run()
    [mail] = ferry.mail_to("b-admin@b.test")
    assert mail.subject == "[Ferry] Request received from Institution A (A)"
    ferry.clock.advance(3600)
    ferry.run()
    assert len(ferry.mail_to("b-admin@b.test")) == 1  # sent once, not again


def test_starttls_with_the_servers_own_certificate(tmp_path, database_url):
    context, certificate = self_signed(tmp_path)
    with smtp_server(tls=context) as smtp:
        ferry = build_ferry(tmp_path, database_url, smtp, smtp_starttls=True, smtp_ca=certificate)
        try:
            ferry.person("b-admin@b.test", {ferry.b: "admin"})
            ferry.notify(Event(EventKind.REGISTRATION_WAITING, ferry.b, Subject("registration", 1)))
            ferry.run()
            [mail] = ferry.mail_to("b-admin@b.test")
            assert mail.subject == "[Ferry] Registration waiting at Institution B (B)"
        finally:
            ferry.archive.engine.dispose()


def test_a_certificate_nobody_vouches_for_is_refused(tmp_path, database_url):
    context, _certificate = self_signed(tmp_path)
    with smtp_server(tls=context) as smtp:
        ferry = build_ferry(tmp_path, database_url, smtp, smtp_starttls=True)
        try:
            ferry.person("b-admin@b.test", {ferry.b: "admin"})
            ferry.notify(Event(EventKind.REGISTRATION_WAITING, ferry.b, Subject("registration", 1)))
            ferry.run()
            [job] = JobQueue(ferry.engine).list(kind="notify")
            assert job.status == "queued" and "CERTIFICATE_VERIFY_FAILED" in job.last_error
            assert smtp.mailbox.received == []
        finally:
            ferry.archive.engine.dispose()


def test_without_an_smtp_host_emails_are_recorded_not_sent(tmp_path, database_url):
    ferry = build_ferry(tmp_path, database_url, None)
    try:
        assert describe_mail(ferry.settings).startswith("recorded, not sent")
        admin = ferry.person("b-admin@b.test", {ferry.b: "admin"})
        ferry.notify(Event(EventKind.REGISTRATION_WAITING, ferry.b, Subject("registration", 1)))
        ferry.run()
        [job] = JobQueue(ferry.engine).list(kind="notify")
        assert (job.status, job.result) == (
            "done",
            "registration-waiting: 1 recorded, not sent (no SMTP host)",
        )
        with Session(ferry.engine) as session:
            [row] = session.exec(select(Notification)).all()
        assert (row.user_pk, row.status, row.subject) == (
            admin,
            MailStatus.RECORDED,
            "registration:1",
        )
    finally:
        ferry.archive.engine.dispose()
