"""`ferry notifications ...` in-process, as a user would run it, against a real SMTP server."""

from __future__ import annotations

from dimse.context import BridgeContext
from exchange.notifications import Event, EventKind, Subject, notify
from ferry.background import build_worker
from ferry.settings import load_settings
from foundation.clock import utc_now
from tests.exchange._smtp import smtp_server
from tests.policy._people import add_institution, add_user


def test_a_persons_choice_from_the_command_line(ferry_cli, archive):
    add_user(archive.engine, "nina@north.test")
    assert ferry_cli("notifications", "show", "nina@north.test").out == "own\n"
    done = ferry_cli("notifications", "set", "nina@north.test", "failures")
    assert done.code == 0 and "failures" in done.err
    assert ferry_cli("notifications", "show", "nina@north.test").out == "failures\n"
    refused = ferry_cli("notifications", "set", "nina@north.test", "sometimes")
    assert refused.code == 2 and "invalid choice: 'sometimes'" in refused.err
    unknown = ferry_cli("notifications", "show", "nobody@north.test")
    assert unknown.code == 1 and "no user with email" in unknown.err


def test_the_record_and_the_settings_list(ferry_cli, archive):
    north = add_institution(archive.engine, "NORTH")
    add_user(archive.engine, "admin@north.test", memberships={north: "admin"})
    with archive.engine.begin() as connection:
        event = Event(EventKind.REGISTRATION_WAITING, north, Subject("registration", 4))
        notify(connection, event, now=utc_now())

    settings = load_settings()
    build_worker(BridgeContext(settings.dimse(), archive), settings).run_until_idle()
    listed = ferry_cli("notifications", "list", "--institution", "NORTH")
    assert listed.code == 0, listed.err
    assert listed.rows()[1][2:6] == [
        "registration-waiting",
        "registration:4",
        "admin@north.test",
        "recorded",
    ]
    config = ferry_cli("config").out
    assert "FERRY_SMTP_HOST=\n" in config and "FERRY_SMTP_STARTTLS=True\n" in config


def test_send_test_checks_the_smtp_settings(ferry_cli, monkeypatch):
    refused = ferry_cli("notifications", "send-test", "me@north.test")
    assert refused.code == 1 and "FERRY_SMTP_HOST is not set" in refused.err
    with smtp_server() as smtp:
        monkeypatch.setenv("FERRY_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("FERRY_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("FERRY_SMTP_STARTTLS", "false")
        monkeypatch.setenv("FERRY_MAIL_FROM", "ferry@north.test")
        sent = ferry_cli("notifications", "send-test", "me@north.test")
        assert sent.code == 0, sent.err
        [mail] = smtp.mailbox.to("me@north.test")
        assert mail.subject == "[Ferry] Test email"
        smtp.stop()
        gone = ferry_cli("notifications", "send-test", "me@north.test")
        assert gone.code == 1 and "ConnectionRefusedError" in gone.err
