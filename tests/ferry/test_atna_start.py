"""ATNA shipping as `ferry serve` assembles it: bad settings refused at start, the loop running."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from archive.store import Archive
from audit import record_many
from audit.shipping import shipping_status
from ferry.background import Background
from ferry.settings import Settings, SettingsError, load_settings, replace_settings
from tests.audit._records import sample
from tests.audit._syslog import SyslogReceiver, event_pk, make_pki, parse, server_context


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FERRY_ATNA_URL", "https://arr.example.org/audit"),
        ("FERRY_ATNA_URL", "syslog+tls://arr.example.org:99999"),
        ("FERRY_ATNA_APP_NAME", "ferry audit"),
        ("FERRY_METRICS_TOKEN", "short"),
    ],
)
def test_unusable_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_serve_refuses_to_start_with_a_missing_ca_file(ferry_cli, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FERRY_ATNA_URL", "syslog+tls://127.0.0.1:6514")
    monkeypatch.setenv("FERRY_ATNA_CA", str(tmp_path / "missing-ca.pem"))
    monkeypatch.setenv("FERRY_DICOM_PORT", "0")

    ran = ferry_cli("serve")

    assert ran.code == 2
    assert "invalid configuration" in ran.err
    assert "missing-ca.pem" in ran.err
    assert "Traceback" not in ran.err


def test_background_ships_what_is_recorded_and_the_cli_reports_it(
    settings: Settings, archive: Archive, tmp_path: Path, ferry_cli
) -> None:
    pki = make_pki(tmp_path)
    receiver = SyslogReceiver("tls", server_context(pki))
    receiver.start()
    configured = replace_settings(
        settings, dicom_port=0, atna_url=receiver.url, atna_ca=pki.ca, atna_app_name="ferry-it"
    )
    background = Background(configured, archive)
    background.start()
    try:
        record_many(archive.engine, [sample(n) for n in range(1, 4)])
        messages = receiver.wait_for(3)
        deadline = time.monotonic() + 30
        while shipping_status(archive.engine).shipped_pk < 3:
            assert time.monotonic() < deadline, "the cursor did not move"
            time.sleep(0.02)
    finally:
        background.stop()
        receiver.stop()
    assert [event_pk(parse(message)[1]) for message in messages] == [1, 2, 3]
    assert parse(messages[0])[0].group(3) == b"ferry-it"

    ran = ferry_cli("audit", "shipping")
    assert ran.code == 0
    assert f"shipped through event 3 of 3 to {receiver.url}" in ran.out
