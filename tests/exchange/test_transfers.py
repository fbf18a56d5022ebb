"""Direct-push transfers: collecting a study, the quiet time, core and out-of-hours routing."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import Connection
from sqlmodel import Session, select

from archive.models import StudyGrant
from archive.store import Archive
from audit.search import AuditEntry, AuditQuery, iter_events
from exchange.models import TransferStatus
from exchange.notifications import NOTIFY
from exchange.routing import transfer_sweeper
from exchange.transfers import list_transfers, mark_delivery, note_arrivals
from foundation.jobs import Job, enqueue
from policy import store
from policy.store.destinations import create_route
from tests import factories
from tests.dimse.conftest import Clock
from tests.factories import StudySpec, write_series

LONDON = ZoneInfo("Europe/London")
WEDNESDAY_10 = datetime(2026, 6, 10, 10, 0, tzinfo=LONDON)
SUNDAY_03 = datetime(2026, 6, 14, 3, 0, tzinfo=LONDON)


def enqueue_forward(
    connection: Connection,
    *,
    study_uid: str,
    node_pk: int,
    now: datetime,
    transfer_pk: int | None = None,
    requested_by: str = "",
) -> int:
    """The outbox itself; the DIMSE edge's forwarding job has the same shape."""
    payload = {"study_uid": study_uid, "node_pk": node_pk, "transfer_pk": transfer_pk}
    return enqueue(connection, "forward-study", payload, now=now)


@dataclass
class World:
    """HOSP's PACS pushes to FERRY_TO_STMARY: St Mary's day PACS, or out of hours elsewhere."""

    archive: Archive
    clock: Clock
    hosp: int
    stmary: int
    sender: int
    day_pacs: int
    night_pacs: int
    route: int
    study_uid: str

    def arrive(self, count: int = 3) -> None:
        note_arrivals(
            self.archive.engine,
            self.route,
            self.hosp,
            "PACS_HOSP",
            {self.study_uid: count},
            self.clock(),
        )

    def sweep(self) -> int:
        return transfer_sweeper(self.archive, self.clock, enqueue_forward)()

    def transfers(self, **filters: Any) -> list[Any]:
        return list_transfers(self.archive.engine, **filters)

    def grants(self) -> list[StudyGrant]:
        with Session(self.archive.engine) as session:
            return list(session.exec(select(StudyGrant)))

    def jobs(self) -> list[Job]:
        """Forwarding jobs (the emails a transfer causes are `notify` jobs of their own)."""
        with Session(self.archive.engine) as session:
            return list(session.exec(select(Job).where(Job.kind != NOTIFY)))

    def audit(self) -> list[AuditEntry]:
        query = AuditQuery(action="transfer", study_uid=self.study_uid)
        return list(iter_events(self.archive.engine, query))


@pytest.fixture
def world(archive: Archive, tmp_path: Path) -> World:
    engine = archive.engine
    hosp = store.create_institution(engine, "HOSP", "Hospital").pk
    stmary = store.create_institution(engine, "STMARY", "St Mary's", timezone="Europe/London").pk
    assert hosp is not None and stmary is not None
    sender = factories.create_node(engine, hosp, "PACS_HOSP", "127.0.0.1", 104, can_write=True).pk
    day = factories.create_node(engine, stmary, "PACS_STMARY", "127.0.0.1", 105, can_write=True).pk
    night = factories.create_node(
        engine, stmary, "NIGHT_STMARY", "127.0.0.1", 106, can_write=True
    ).pk
    route = create_route(engine, "FERRY_TO_STMARY", stmary, destination_node_pk=day).pk
    assert sender and day and night and route
    store.set_core_hours(engine, stmary, {1, 2, 3, 4, 5}, "08:00", "18:00")
    spec = StudySpec(patient_id="HOSP-42", accession_number="ACC-77")
    outcomes = archive.store_files(write_series(tmp_path / "study", 3, spec=spec), None, hosp)
    assert all(outcome.stored for outcome in outcomes)
    clock = Clock(WEDNESDAY_10)
    return World(archive, clock, hosp, stmary, sender, day, night, route, spec.study_uid)


def test_arrivals_collect_into_one_transfer_even_at_once(world: World) -> None:
    world.arrive(2)
    world.clock.advance(seconds=10)
    barrier = threading.Barrier(6)

    def associate() -> None:
        barrier.wait()
        world.arrive(1)

    threads = [threading.Thread(target=associate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [transfer] = world.transfers()
    assert transfer.status == TransferStatus.COLLECTING
    assert transfer.instances == 8
    assert transfer.calling_ae_title == "PACS_HOSP"
    assert transfer.last_instance_at == world.clock.now


def test_quiet_time_then_delivered_to_the_day_node_in_core_hours(world: World) -> None:
    rule = store.create_destination_rule(
        world.archive.engine,
        world.stmary,
        node_pk=world.day_pacs,
        sender_institution_pk=world.hosp,
        window="core",
        out_of_hours_to_worklist=True,
    )
    world.arrive()
    world.clock.advance(seconds=29)
    assert world.sweep() == 0
    world.arrive()  # a late instance restarts the quiet time
    world.clock.advance(seconds=29)
    assert world.sweep() == 0
    assert world.transfers()[0].status == TransferStatus.COLLECTING
    world.clock.advance(seconds=1)
    assert world.sweep() == 1
    [transfer] = world.transfers()
    assert transfer.status == TransferStatus.DELIVERING
    assert transfer.destination_node_pk == world.day_pacs
    assert transfer.instances == 6
    [job] = world.jobs()
    assert transfer.job_pk == job.pk
    assert orjson.loads(job.payload)["node_pk"] == world.day_pacs
    [grant] = world.grants()
    assert (grant.institution_pk, grant.reason) == (world.stmary, f"transfer {transfer.pk}")
    assert world.sweep() == 0  # decided once

    mark_delivery(world.archive.engine, transfer.pk or 0, "delivered", "3 of 3 sent", world.clock())
    [delivered] = world.transfers(status="delivered")
    assert delivered.completed_at == world.clock.now
    decided, reported = world.audit()
    assert (decided.outcome, decided.actor, decided.rule) == (
        "allowed",
        "node:PACS_HOSP",
        f"destination-rule:{rule.pk}",
    )
    assert (decided.patient_id, decided.accession_number) == ("HOSP-42", "ACC-77")
    detail = orjson.loads(decided.detail)
    assert detail["route"] == "FERRY_TO_STMARY"
    assert detail["destination"] == f"node:{world.day_pacs}"
    assert detail["calling_ae"] == "PACS_HOSP"
    assert (reported.outcome, reported.reason) == ("allowed", "3 of 3 sent")
    assert [t.pk for t in world.transfers(institution_pks=[world.stmary])] == [transfer.pk]
    assert [t.pk for t in world.transfers(institution_pks=[world.hosp])] == [transfer.pk]
    assert world.transfers(status="refused") == []

    world.arrive(1)  # a straggler after the study was settled starts a transfer of its own
    later, settled = world.transfers()
    assert (later.status, later.instances, settled.pk) == ("collecting", 1, transfer.pk)


@pytest.mark.parametrize("night", ["worklist", "node"])
def test_out_of_hours_goes_to_the_out_of_hours_destination(world: World, night: str) -> None:
    store.create_destination_rule(
        world.archive.engine,
        world.stmary,
        node_pk=world.day_pacs,
        sender_institution_pk=world.hosp,
        window="core",
        out_of_hours_node_pk=world.night_pacs if night == "node" else None,
        out_of_hours_to_worklist=night == "worklist",
    )
    world.clock.now = SUNDAY_03
    world.arrive()
    world.clock.advance(minutes=1)
    assert world.sweep() == 1
    [transfer] = world.transfers()
    [grant] = world.grants()
    assert grant.institution_pk == world.stmary
    if night == "worklist":
        assert transfer.status == TransferStatus.ON_WORKLIST
        assert transfer.destination_node_pk is None
        assert world.jobs() == []
    else:
        assert transfer.status == TransferStatus.DELIVERING
        assert transfer.destination_node_pk == world.night_pacs
        [job] = world.jobs()
        assert orjson.loads(job.payload)["node_pk"] == world.night_pacs
    [event] = world.audit()
    assert event.reason == "out of hours: sent to the out-of-hours destination"


@pytest.mark.parametrize(("can_write", "rule"), [(True, "default-deny"), (False, "sender-role")])
def test_refused_without_a_rule_or_the_right_to_write(
    world: World, can_write: bool, rule: str
) -> None:
    engine = world.archive.engine
    sender = store.node_facts(store.get_node(engine, world.sender))
    store.update_node(engine, replace(sender, can_write=can_write))
    world.arrive()
    world.clock.advance(seconds=30)
    assert world.sweep() == 1
    [transfer] = world.transfers(status="refused")
    assert transfer.completed_at == world.clock.now
    assert world.grants() == [] and world.jobs() == []
    [event] = world.audit()
    assert (event.outcome, event.rule, event.patient_id) == ("denied", rule, "HOSP-42")
    assert event.reason == transfer.reason


def test_an_opaque_id_never_reads_as_a_command_line_option() -> None:
    """`ferry transfer show <id>` and `ferry request show <id>` take the id as typed."""
    from exchange.models import new_public_id

    ids = [new_public_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(i[0].isalnum() and len(i) <= 32 for i in ids)
