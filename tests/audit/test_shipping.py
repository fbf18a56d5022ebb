"""Shipping the audit trail to a real syslog receiver on loopback: TLS (RFC 5425) and UDP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from audit import record_many
from audit.export import AuditSource
from audit.shipping import AuditShipper, ShippingLoop, shipping_status
from audit.syslog import (
    CollectorUnavailable,
    SyslogConfigError,
    TlsSyslogSender,
    UdpSyslogSender,
    parse_destination,
)
from tests.audit._records import sample
from tests.audit._syslog import (
    Pki,
    SyslogReceiver,
    event_pk,
    make_pki,
    parse,
    server_context,
    unused_port,
)

SOURCE = AuditSource("ferry.example.org", "FERRY", "ferry-1.example.org")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("audit-pki"))


@pytest.fixture
def collector(pki: Pki) -> Iterator[SyslogReceiver]:
    receiver = SyslogReceiver("tls", server_context(pki))
    receiver.start()
    yield receiver
    receiver.stop()


def tls_shipper(engine: Engine, url: str, pki: Pki, **options: object) -> AuditShipper:
    sender = TlsSyslogSender(parse_destination(url), ca_file=pki.ca, timeout=10, **options)  # type: ignore[arg-type]
    return AuditShipper(engine, sender, SOURCE, app_name="ferry-test", batch=3)


def add_events(engine: Engine, first: int, count: int) -> None:
    record_many(engine, [sample(n) for n in range(first, first + count)])


def shipped_pks(receiver: SyslogReceiver) -> list[int]:
    return [event_pk(parse(message)[1]) for message in receiver.received()]


def test_events_arrive_in_order_as_rfc5424_messages_with_a5_xml(engine, collector, pki):
    add_events(engine, 1, 7)
    shipper = tls_shipper(engine, collector.url, pki)

    assert shipper.ship_all() == 7

    messages = collector.wait_for(7)
    assert shipped_pks(collector) == [1, 2, 3, 4, 5, 6, 7]
    header, root = parse(messages[0])
    assert header.group(1) == b"2025-03-01T09:31:00.000000Z"  # the event's own time
    assert header.group(2) == b"ferry-1.example.org"
    assert header.group(3) == b"ferry-test"
    assert root.tag == "AuditMessage"
    assert root.find("EventIdentification/EventID") is not None
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "ferry.example.org"
    status = shipping_status(engine)
    assert (status.shipped_pk, status.head_pk, status.backlog) == (7, 7, 0)
    assert status.destination == collector.url


def test_a_collector_down_then_up_loses_nothing_and_repeats_nothing(engine, pki):
    receiver = SyslogReceiver("tls", server_context(pki))  # not started yet: down
    add_events(engine, 1, 4)
    shipper = tls_shipper(engine, receiver.url, pki)

    with pytest.raises(CollectorUnavailable):
        shipper.ship_once()
    assert shipping_status(engine).shipped_pk == 0
    assert "127.0.0.1" in shipping_status(engine).last_error

    receiver.start()
    try:
        assert shipper.ship_all() == 4
        add_events(engine, 5, 2)
        assert shipper.ship_all() == 2
        receiver.wait_for(6)
        assert shipped_pks(receiver) == [1, 2, 3, 4, 5, 6]

        receiver.stop()  # down again, after delivering
        add_events(engine, 7, 1)
        with pytest.raises(CollectorUnavailable):
            shipper.ship_once()
        receiver.start()
        assert shipper.ship_all() == 1
        receiver.wait_for(7)
        assert shipped_pks(receiver) == [1, 2, 3, 4, 5, 6, 7]
        assert shipping_status(engine).last_error == ""
    finally:
        receiver.stop()


def test_a_restarted_shipper_resumes_from_the_cursor(engine, collector, pki):
    add_events(engine, 1, 5)
    first = tls_shipper(engine, collector.url, pki)
    assert first.ship_all() == 5
    first.release()  # a clean stop

    add_events(engine, 6, 2)
    second = tls_shipper(engine, collector.url, pki)  # a new process, in effect
    assert second.ship_all() == 2

    collector.wait_for(7)
    assert shipped_pks(collector) == [1, 2, 3, 4, 5, 6, 7]


def test_one_shipper_at_a_time_holds_the_lease(engine, collector, pki):
    add_events(engine, 1, 2)
    holder, other = tls_shipper(engine, collector.url, pki), tls_shipper(engine, collector.url, pki)
    assert holder.ship_once() == 2
    add_events(engine, 3, 1)

    assert other.ship_once() == 0  # the lease is the holder's
    assert holder.ship_once() == 1
    holder.release()
    add_events(engine, 4, 1)
    assert other.ship_once() == 1
    assert shipped_pks(collector) == [1, 2, 3, 4]


def test_the_loop_ships_continuously_and_catches_up_after_an_outage(engine, pki):
    receiver = SyslogReceiver("tls", server_context(pki))
    receiver.start()
    loop = ShippingLoop(tls_shipper(engine, receiver.url, pki), idle_seconds=0.05)
    loop.retry_seconds, loop.max_wait = 0.05, 0.2
    loop.start()
    try:
        add_events(engine, 1, 3)
        receiver.wait_for(3)
        receiver.stop()
        add_events(engine, 4, 5)  # recorded while the collector is down
        _wait_until(lambda: "127.0.0.1" in shipping_status(engine).last_error)
        receiver.start()
        receiver.wait_for(8)
        _wait_until(lambda: shipping_status(engine).shipped_pk == 8)
    finally:
        loop.stop()
        receiver.stop()
    assert shipped_pks(receiver) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_mutual_tls_presents_the_client_certificate(engine, pki):
    receiver = SyslogReceiver("tls", server_context(pki, require_client=True))
    receiver.start()
    try:
        add_events(engine, 1, 2)
        anonymous = tls_shipper(engine, receiver.url, pki)
        with pytest.raises(CollectorUnavailable):
            anonymous.ship_once()
        anonymous.release()
        identified = tls_shipper(
            engine, receiver.url, pki, cert_file=pki.client.cert, key_file=pki.client.key
        )
        assert identified.ship_all() == 2
        receiver.wait_for(2)
    finally:
        receiver.stop()
    assert shipped_pks(receiver) == [1, 2]


def test_a_collector_with_a_certificate_from_another_ca_is_not_trusted(engine, pki, tmp_path):
    stranger = make_pki(tmp_path)
    receiver = SyslogReceiver("tls", server_context(stranger))
    receiver.start()
    try:
        add_events(engine, 1, 1)
        with pytest.raises(CollectorUnavailable, match="certificate"):
            tls_shipper(engine, receiver.url, pki).ship_once()
    finally:
        receiver.stop()
    assert receiver.received() == []
    assert shipping_status(engine).shipped_pk == 0


def test_udp_sends_one_datagram_per_event_in_order(engine):
    receiver = SyslogReceiver("udp")
    receiver.start()
    try:
        add_events(engine, 1, 4)
        sender = UdpSyslogSender(parse_destination(receiver.url))
        assert AuditShipper(engine, sender, SOURCE, batch=10).ship_all() == 4
        receiver.wait_for(4)
    finally:
        receiver.stop()
    assert shipped_pks(receiver) == [1, 2, 3, 4]
    assert shipping_status(engine).shipped_pk == 4


def test_udp_to_a_closed_port_on_this_host_is_reported(engine):
    add_events(engine, 1, 2)
    sender = UdpSyslogSender(parse_destination(f"syslog+udp://127.0.0.1:{unused_port()}"))
    shipper = AuditShipper(engine, sender, SOURCE, batch=1)
    with pytest.raises(CollectorUnavailable):  # "port unreachable" fails the next datagram
        shipper.ship_all()
    assert shipping_status(engine).shipped_pk == 0


@pytest.mark.parametrize(
    "url",
    ["http://collector:514", "syslog+tcp://collector:601", "syslog+tls://", "syslog+tls://h:x"],
)
def test_destinations_that_are_not_syslog_urls_are_refused(url):
    with pytest.raises(SyslogConfigError):
        parse_destination(url)


def test_default_ports_are_the_registered_ones():
    assert parse_destination("syslog+tls://arr.example.org").port == 6514
    assert parse_destination("syslog+udp://arr.example.org").port == 514


def test_unusable_tls_files_are_refused_when_built(tmp_path: Path, pki):
    destination = parse_destination("syslog+tls://127.0.0.1:6514")
    with pytest.raises(SyslogConfigError, match="CA file"):
        TlsSyslogSender(destination, ca_file=tmp_path / "missing.pem")
    with pytest.raises(SyslogConfigError, match="client certificate"):
        TlsSyslogSender(destination, ca_file=pki.ca, cert_file=pki.ca, key_file=pki.client.key)
    with pytest.raises(SyslogConfigError, match="needs its certificate"):
        TlsSyslogSender(destination, key_file=pki.client.key)


def _wait_until(condition: object, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
