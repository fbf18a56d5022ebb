"""What runs beside the HTTP server in one process: the DIMSE bridge and the job worker.

`ferry serve` starts both (the embedded default), and forks further bridge processes
(`ferry.forks`, `FERRY_DICOM_PROCESSES`); in the scaled shape each may run alone
(`FERRY_DICOM_PORT=0` turns the listener off, `FERRY_JOBS_ENABLED=false` the worker).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket

from sqlalchemy import Engine

from archive.store import Archive
from audit.shipping import AuditShipper, ShippingLoop
from audit.syslog import (
    SyslogConfigError,
    SyslogSender,
    TlsSyslogSender,
    UdpSyslogSender,
    parse_destination,
)
from dimse.context import BridgeContext
from dimse.forward import FORWARD_STUDY, enqueue_forward, forward_handler
from dimse.request_peers import BridgePacs
from dimse.server import Bridge
from dimse.shared_listeners import SharedListeners
from exchange.answer_job import ANSWER_REQUEST, answer_handler
from exchange.fetching import FetchServices
from exchange.mail_sender import MailSender, SmtpConfig
from exchange.models import FETCH_FOR_TRANSFER, PSEUDONYMISE_FOR_TRANSFER
from exchange.node_transfers import fetch_handler
from exchange.notifications import NOTIFY
from exchange.notify_job import Notifier, notify_handler
from exchange.pseudonymisation import CopyServices, copy_handler
from exchange.request_expiry import request_sweeper
from exchange.routing import transfer_sweeper
from ferry.forks import per_core
from ferry.settings import Settings, SettingsError
from foundation.clock import Clock, utc_now
from foundation.jobs import Worker
from policy.sessions import session_sweeper
from policy.store.snapshot import snapshot
from retention.sweeper import Sweeper, retention_sweeper

log = logging.getLogger(__name__)


def build_worker(
    context: BridgeContext, settings: Settings, *, idle_seconds: float = 1.0
) -> Worker:
    """The job worker with every handler and periodic sweep Ferry has (mail from `settings`)."""
    enqueue = functools.partial(enqueue_forward, max_attempts=context.config.forward_max_attempts)
    notifier = Notifier(context.engine, mail_sender(settings), public_base(settings), context.clock)
    fetching = FetchServices(
        context.archive, BridgePacs(context), enqueue,
        functools.partial(snapshot, context.engine), context.clock,
    )  # fmt: skip
    copying = CopyServices(
        context.archive, enqueue, functools.partial(snapshot, context.engine), context.clock
    )
    return Worker(
        context.jobs,
        {
            FORWARD_STUDY: forward_handler(context),
            NOTIFY: notify_handler(notifier),
            ANSWER_REQUEST: answer_handler(fetching),
            FETCH_FOR_TRANSFER: fetch_handler(fetching),
            PSEUDONYMISE_FOR_TRANSFER: copy_handler(copying),
        },
        idle_seconds=idle_seconds,
        ticks=[
            transfer_sweeper(context.archive, context.clock, enqueue),
            request_sweeper(context.engine, context.clock),
            retention_sweeper(
                Sweeper(context.archive, settings.retention(), context.clock),
                settings.retention_interval_seconds,
            ),
            session_sweeper(context.engine, context.clock),
        ],
    )


def build_shipping(
    settings: Settings, engine: Engine, clock: Clock = utc_now
) -> ShippingLoop | None:
    """The audit shipping loop when FERRY_ATNA_URL names a collector; SettingsError if its
    TLS files cannot be used, so that a bad configuration stops the start, not the shipping."""
    if not settings.atna_url:
        return None
    destination = parse_destination(settings.atna_url)
    sender: SyslogSender
    if destination.transport == "udp":
        sender = UdpSyslogSender(destination)
    else:
        try:
            sender = TlsSyslogSender(
                destination,
                ca_file=settings.atna_ca,
                cert_file=settings.atna_cert,
                key_file=settings.atna_key,
            )
        except SyslogConfigError as error:
            raise SettingsError(f"FERRY_ATNA_CA/CERT/KEY: {error}") from None
    source = settings.audit_source()
    shipper = AuditShipper(engine, sender, source, app_name=settings.atna_app_name, clock=clock)
    return ShippingLoop(shipper)


def describe_shipping(settings: Settings) -> str:
    if not settings.atna_url:
        return "kept in the database (set FERRY_ATNA_URL to ship them to a repository)"
    return f"shipped to {settings.atna_url} as they happen"


def public_base(settings: Settings) -> str:
    """Ferry's address as people reach it: links in emails start here."""
    return settings.public_url or f"http://{settings.http_host}:{settings.http_port}"


def mail_sender(settings: Settings) -> MailSender | None:
    """None without FERRY_SMTP_HOST: notifications are then recorded, not sent."""
    if not settings.smtp_host:
        return None
    config = SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        user=settings.smtp_user,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        sender=settings.mail_from,
        ca_file=settings.smtp_ca,
    )
    return MailSender(config)


def describe_mail(settings: Settings) -> str:
    sender = mail_sender(settings)
    if sender is None:
        return "recorded, not sent (set FERRY_SMTP_HOST to send them)"
    return f"sent by SMTP through {sender.config.label} from {settings.mail_from}"


class Background:
    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        *,
        clock: Clock = utc_now,
        shared: SharedListeners | None = None,
    ) -> None:
        self.settings = settings
        # Shipping runs where the job worker runs (the lease keeps it to one process anyway);
        # built first: unusable certificate files stop the start before anything listens.
        self.shipping = (
            build_shipping(settings, archive.engine, clock) if settings.jobs_enabled else None
        )
        listening = bool(settings.dicom_port or settings.dicom_tls_port)
        config = settings.dimse()
        self.bridge = Bridge(config, archive, clock=clock, shared=shared) if listening else None
        context = self.bridge.context if self.bridge else BridgeContext(config, archive, clock)
        self.worker = build_worker(context, settings) if settings.jobs_enabled else None

    def start(self) -> None:
        if self.bridge is not None:
            self.bridge.start()
        if self.worker is not None:
            self.worker.start()
        if self.shipping is not None:
            self.shipping.start()

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        if self.worker is not None:
            self.worker.stop()
        if self.shipping is not None:
            self.shipping.stop()


def bridge_count(settings: Settings) -> int:
    """Bridge processes of `ferry serve`: `FERRY_DICOM_PROCESSES`, one per CPU core when 0;
    none without a DIMSE port."""
    if not (settings.dicom_port or settings.dicom_tls_port):
        return 0
    return per_core(settings.dicom_processes)


def serve_forked_bridge(
    settings: Settings, archive: Archive, http: socket.socket, shared: SharedListeners | None
) -> None:
    """A bridge forked from `ferry serve`, accepting from the DIMSE ports `ferry serve` bound:
    the HTTP socket is the HTTP processes' alone (a copy kept open here would take connections
    that nobody answers once they have ended)."""
    http.close()
    serve_bridge_only(settings, archive, shared)


def serve_bridge_only(
    settings: Settings, archive: Archive, shared: SharedListeners | None = None
) -> None:
    """`ferry dimse serve`, or a bridge `ferry serve` forked: the bridge alone, until SIGTERM
    or SIGINT."""
    stopping = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)  # and in the threads started from here
    bridge = Bridge(settings.dimse(), archive, shared=shared)
    bridge.start()
    log.info("DIMSE bridge process %s listening", os.getpid())
    try:
        signal.sigwait(stopping)
    finally:
        bridge.stop()
