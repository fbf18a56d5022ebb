"""Shipping the audit trail to an Audit Record Repository as it grows (IHE ATNA, PS3.15 A.5).

Each event becomes the RFC 5424 message `ferry audit export` writes (`audit.export`), sent in
chain order over a syslog transport (`audit.syslog`). A durable cursor, the `audit_shipping`
row, holds the last delivered event's pk: it moves only after a batch was delivered, so a
restart or an unreachable collector loses nothing, and a batch whose delivery is in doubt is
sent again (at least once; the collector may see an event twice, never miss one). Events
become visible in pk order (they are numbered under the chain lock), so nothing appears behind
the cursor later.

The row is also a lease: one process ships at a time, however many run a worker; a process
that dies stops renewing it and another takes over when it runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import col

from audit.export import AuditSource, syslog_message
from audit.models import HEAD_PK, AuditShipping
from audit.search import AuditEntry, read_events_after
from audit.syslog import CollectorUnavailable, SyslogSender
from audit.trail import chain_head
from foundation import metrics
from foundation.clock import Clock, utc_now

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class ShippingStatus:
    shipped_pk: int  # the last event the repository has
    head_pk: int  # the last event recorded
    destination: str
    last_error: str

    @property
    def backlog(self) -> int:
        return max(0, self.head_pk - self.shipped_pk)


class AuditShipper:
    """Ships what follows the cursor, one batch per `ship_once`."""

    def __init__(
        self,
        engine: Engine,
        sender: SyslogSender,
        source: AuditSource,
        *,
        app_name: str = "ferry",
        batch: int = 200,
        clock: Clock = utc_now,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.source = source
        self.app_name = app_name
        self.batch = batch
        self.clock = clock
        self.shipper_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def ship_once(self) -> int:
        """Events delivered now (0: nothing new, or another process ships); raises
        CollectorUnavailable, with the cursor left where it was."""
        if not self._waiting() or not self._claim():
            return 0  # an idle shipper reads; it writes (renews its lease) only to ship
        cursor = self._cursor()
        entries = read_events_after(self.engine, cursor, self.batch)
        if not entries:
            return 0
        self._send(entries)
        self._advance(cursor, entries[-1].pk)
        return len(entries)

    def ship_all(self) -> int:
        """Until nothing is left (or CollectorUnavailable)."""
        total = 0
        while shipped := self.ship_once():
            total += shipped
        return total

    def release(self) -> None:
        """Give the lease up at a clean stop, so a restarted process ships at once."""
        with self.engine.begin() as connection:
            connection.execute(
                update(AuditShipping)
                .where(col(AuditShipping.pk) == HEAD_PK)
                .where(col(AuditShipping.locked_by) == self.shipper_id)
                .values(locked_by="", locked_until=None)
            )

    def _send(self, entries: Sequence[AuditEntry]) -> None:
        transport = self.sender.destination.transport
        messages = [syslog_message(entry, self.source, self.app_name) for entry in entries]
        try:
            self.sender.send(messages)
        except CollectorUnavailable as error:
            metrics.ATNA_FAILURES.labels(transport).inc()
            self._note_error(str(error))
            raise
        metrics.ATNA_SHIPPED.labels(transport).inc(len(entries))

    def _claim(self) -> bool:
        now = self.clock()
        self._ensure_row()
        with self.engine.begin() as connection:
            claimed = connection.execute(
                update(AuditShipping)
                .where(col(AuditShipping.pk) == HEAD_PK)
                .where(
                    (col(AuditShipping.locked_by) == "")
                    | (col(AuditShipping.locked_by) == self.shipper_id)
                    | (col(AuditShipping.locked_until) < now)
                )
                .values(
                    locked_by=self.shipper_id,
                    locked_until=now + LEASE,
                    destination=self.sender.destination.label,
                )
            )
        return claimed.rowcount == 1

    def _waiting(self) -> bool:
        status = shipping_status(self.engine)
        return status.head_pk > status.shipped_pk

    def _cursor(self) -> int:
        with self.engine.connect() as connection:
            value = connection.execute(
                select(col(AuditShipping.last_pk)).where(col(AuditShipping.pk) == HEAD_PK)
            ).scalar()
        return int(value or 0)

    def _advance(self, cursor: int, last_pk: int) -> None:
        with self.engine.begin() as connection:
            moved = connection.execute(
                update(AuditShipping)
                .where(col(AuditShipping.pk) == HEAD_PK)
                .where(col(AuditShipping.locked_by) == self.shipper_id)
                .where(col(AuditShipping.last_pk) == cursor)
                .values(last_pk=last_pk, last_error="", updated_at=self.clock())
            )
        if moved.rowcount != 1:  # our lease ran out and another shipper took over
            log.warning("audit shipping: lease lost; events after %s may be sent twice", cursor)

    def _note_error(self, error: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(AuditShipping)
                .where(col(AuditShipping.pk) == HEAD_PK)
                .values(last_error=error[:1024], updated_at=self.clock())
            )

    def _ensure_row(self) -> None:
        with self.engine.connect() as connection:
            exists = connection.execute(
                select(col(AuditShipping.pk)).where(col(AuditShipping.pk) == HEAD_PK)
            ).first()
        if exists:
            return
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(AuditShipping).values(pk=HEAD_PK, last_pk=0))
        except IntegrityError:
            pass  # another shipper created it first


def shipping_status(engine: Engine) -> ShippingStatus:
    """Where shipping stands: what the repository has, what is recorded, the last error."""
    with engine.connect() as connection:
        row = connection.execute(
            select(
                col(AuditShipping.last_pk),
                col(AuditShipping.destination),
                col(AuditShipping.last_error),
            ).where(col(AuditShipping.pk) == HEAD_PK)
        ).first()
    shipped, destination, error = (int(row[0]), str(row[1]), str(row[2])) if row else (0, "", "")
    return ShippingStatus(shipped, chain_head(engine).pk, destination, error)


class ShippingLoop:
    """Ships continuously in a thread; waits longer after each failure (up to `max_wait`)."""

    def __init__(
        self,
        shipper: AuditShipper,
        *,
        idle_seconds: float = 1.0,
        retry_seconds: float = 1.0,
        max_wait: float = 60.0,
    ) -> None:
        self.shipper = shipper
        self.idle_seconds = idle_seconds
        self.retry_seconds = retry_seconds
        self.max_wait = max_wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ferry-atna", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.shipper.release()
        except Exception:  # the database is gone: the lease runs out by itself
            log.warning("audit shipping: could not release the lease", exc_info=True)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                shipped = self.shipper.ship_once()
            except CollectorUnavailable as error:
                failures += 1
                wait = min(self.max_wait, self.retry_seconds * 2 ** (failures - 1))
                log.warning("audit shipping: %s; trying again in %.0f s", error, wait)
                self._stop.wait(wait)
                continue
            except Exception:  # the database went away: wait and try again
                log.exception("audit shipping failed")
                self._stop.wait(self.max_wait)
                continue
            failures = 0
            if not shipped:
                self._stop.wait(self.idle_seconds)


class ShippingCollector:
    """`ferry_atna_backlog_events`: recorded events the repository does not have yet."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            status = shipping_status(self.engine)
        except SQLAlchemyError as error:
            log.warning("metrics: audit shipping status unknown: %s", error)
            return
        yield GaugeMetricFamily(
            "ferry_atna_backlog_events",
            "Audit events recorded but not yet shipped to the audit record repository",
            value=status.backlog,
        )
