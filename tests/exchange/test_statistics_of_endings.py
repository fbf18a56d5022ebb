"""What the statistics say of a transfer after retention ended it: one that ran out before
anyone at the receiver took it is a failure (`expired-unused`) on both sides, and one that had
failed stays a failure (never a volume) after its studies are gone. Both databases, the real
retention sweeper, forwarding job and statistics query."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlmodel import Session

from exchange.history import change_status
from exchange.models import Transfer, TransferStatus
from exchange.oversight import statistics
from exchange.oversight.transactions import TransactionQuery, search_transactions
from exchange.retention_terms import set_policy
from exchange.transfer_endings import note_study_deleted
from exchange.transfers import list_transfers
from foundation.database import alembic_config, create_database_engine, migrate
from policy import store
from policy.store.destinations import create_route
from retention.sweeper import Sweeper
from tests.conftest import free_port, fresh_database
from tests.exchange._two_institutions import SECRET, Ferry, add_node, build_ferry, push_study
from tests.policy._people import add_institution


@pytest.fixture
def ferry(tmp_path: Path, database_url: str) -> Iterator[Ferry]:
    built = build_ferry(tmp_path, database_url, None)
    add_node(built, "PACS_A", built.a)
    yield built
    built.archive.engine.dispose()


def _failures(ferry: Ferry, institution_pk: int) -> list[tuple[str, int, str, str, int]]:
    report = statistics.compute(ferry.engine, institution_pk, None, None)
    return [(f.direction, f.counterpart_pk, f.kind, f.state, f.count) for f in report.failures]


def _moved(ferry: Ferry, institution_pk: int) -> int:
    report = statistics.compute(ferry.engine, institution_pk, None, None)
    return sum(volume.transactions for volume in report.volumes)


def _to_worklist(ferry: Ferry, tmp_path: Path) -> int:
    store.update_institution(ferry.engine, ferry.b, worklist_restricted=False)
    route = create_route(ferry.engine, "FERRY_TO_B", ferry.b)
    return push_study(ferry, tmp_path, route.pk)


def _sweep_after(ferry: Ferry, days: int) -> None:
    ferry.clock.advance(timedelta(days=days, minutes=1).total_seconds())
    Sweeper(ferry.archive, ferry.settings.retention(), ferry.clock).run()
    ferry.run()


def _receiver_did(ferry: Ferry, transfer_pk: int, status: TransferStatus) -> None:
    with Session(ferry.engine) as session:
        transfer = session.get(Transfer, transfer_pk)
        assert transfer is not None
        change_status(session, transfer, status, actor="user:b@b.test", reason="",
                      now=ferry.clock())  # fmt: skip
        session.commit()


@pytest.mark.parametrize(
    ("owner_days", "ended"), [(30, "expired"), (None, "deleted")],
    ids=["receivers-copy-ends-first", "both-copies-end-together"],
)  # fmt: skip
@pytest.mark.parametrize("taken", [None, TransferStatus.VIEWED, TransferStatus.DOWNLOADED])
def test_a_transfer_that_ran_out_before_anyone_took_it_is_a_failure_on_both_sides(
    ferry, tmp_path, owner_days, ended, taken
):
    if owner_days:
        defaults = ferry.settings.retention_defaults()
        set_policy(ferry.engine, ferry.a, {"upload_days": owner_days}, defaults, actor="test",
                   now=ferry.clock())  # fmt: skip
    transfer_pk = _to_worklist(ferry, tmp_path)
    if taken is not None:
        _receiver_did(ferry, transfer_pk, taken)
    assert _failures(ferry, ferry.a) == _failures(ferry, ferry.b) == []

    _sweep_after(ferry, 15)

    [transfer] = list_transfers(ferry.engine)
    assert transfer.status == ended
    if taken is TransferStatus.DOWNLOADED:  # it did its work
        assert _failures(ferry, ferry.a) == _failures(ferry, ferry.b) == []
    else:  # only looked at, or not even that
        assert _failures(ferry, ferry.a) == [("sent", ferry.b, "push", "expired-unused", 1)]
        assert _failures(ferry, ferry.b) == [("received", ferry.a, "push", "expired-unused", 1)]
    assert _moved(ferry, ferry.a) == _moved(ferry, ferry.b) == 1  # it moved all the same


def test_a_study_deleted_by_a_person_is_no_transfer_running_out(ferry, tmp_path):
    _to_worklist(ferry, tmp_path)
    ferry.archive.delete(SECRET.study_uid)
    note_study_deleted(ferry.engine, SECRET.study_uid, "user:a@a.test", ferry.clock())
    [transfer] = list_transfers(ferry.engine)
    assert (transfer.status, transfer.ended_from) == ("deleted", "on-worklist")
    assert _failures(ferry, ferry.a) == _failures(ferry, ferry.b) == []


def test_a_failed_transfer_stays_a_failure_after_retention_deleted_its_study(ferry, tmp_path):
    gone = add_node(ferry, "PACS_B", ferry.b, port=free_port())  # nothing listens there
    store.create_destination_rule(ferry.engine, ferry.b, node_pk=gone,
                                  sender_institution_pk=ferry.a)  # fmt: skip
    route = create_route(ferry.engine, "FERRY_TO_B_PACS", ferry.b, destination_node_pk=gone)
    push_study(ferry, tmp_path, route.pk)
    failed = [("sent", ferry.b, "push", "failed", 1)]
    assert _failures(ferry, ferry.a) == failed and _moved(ferry, ferry.a) == 0

    _sweep_after(ferry, 15)

    [transfer] = list_transfers(ferry.engine)
    assert (transfer.status, transfer.ended_from) == ("deleted", "failed")
    assert _failures(ferry, ferry.a) == failed and _moved(ferry, ferry.a) == 0
    assert _failures(ferry, ferry.b) == [("received", ferry.a, "push", "failed", 1)]
    # and the oversight's search finds it among the failed, saying where it stands now
    for state in ("failed", "deleted"):
        query = TransactionQuery(ferry.a, states=(state,))
        total, [found] = search_transactions(ferry.engine, query)
        assert (total, found.id, found.state, found.ended_from) == (
            1, transfer.public_id, "deleted", "failed",
        )  # fmt: skip
    assert search_transactions(ferry.engine, TransactionQuery(ferry.a, states=("sent",)))[0] == 0


_OLD_TRANSFER = text(
    "INSERT INTO transfer (pk, study_instance_uid, sender_institution_pk, "
    "destination_institution_pk, calling_ae_title, status, reason, instances, created_at, "
    "last_instance_at, public_id, origin, priority, note, created_by, patient_id, "
    "accession_number) VALUES (:pk, '1.2.3', :a, :b, '', :status, '', 1, :at, :at, :id, "
    "'push', 'routine', '', '', '', '')"
)
_OLD_EVENT = text(
    "INSERT INTO transfer_event (transfer_pk, at, actor, status, reason) "
    "VALUES (:pk, :at, 'ferry', :status, '')"
)


@fresh_database
def test_transfers_ended_before_the_upgrade_get_the_state_they_ended_from(database_url):
    """The migration that adds `ended_from` fills it for transfers already ended, from their
    history: the last state before the end (an expired-then-deleted one's too)."""
    engine = create_database_engine(database_url)
    try:
        config = alembic_config(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "zipcrc_0001")
        a, b = add_institution(engine, "A"), add_institution(engine, "B")
        histories = {
            1: ["on-worklist", "viewed", "deleted"],
            2: ["on-worklist", "delivering", "failed", "deleted"],
            3: ["on-worklist", "expired", "deleted"],
            4: ["on-worklist"],
        }
        at = "2026-06-01 10:00:00"
        with engine.begin() as connection:
            for pk, history in histories.items():
                values = {"pk": pk, "a": a, "b": b, "at": at, "id": f"t{pk}"}
                connection.execute(_OLD_TRANSFER, values | {"status": history[-1]})
                for status in history:
                    connection.execute(_OLD_EVENT, {"pk": pk, "at": at, "status": status})
        migrate(engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT pk, ended_from FROM transfer ORDER BY pk"))
            assert rows.all() == [(1, "viewed"), (2, "failed"), (3, "on-worklist"), (4, None)]
    finally:
        engine.dispose()
