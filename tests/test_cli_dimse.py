"""`ferry admin` for the DIMSE bridge: nodes and their rights, routes, jobs and transfers.

Run in-process through `ferry.cli.main`, with the settings a user would give in the environment.
The database hardly matters here (the API tests run both), so SQLite only.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from archive.store import Archive
from exchange.models import Transfer
from foundation.jobs import JobQueue
from policy import store
from policy.store.destinations import find_node, list_routes
from tests.conftest import Ran, sqlite_only

pytestmark = sqlite_only


@pytest.fixture
def ferry(ferry_cli, archive: Archive):
    """Runs `ferry admin ARGS...` against the test's (migrated) database."""
    return lambda *args: ferry_cli("admin", *args)


def ok(ran: Ran) -> Ran:
    assert ran.code == 0, ran.err
    return ran


@pytest.fixture
def north_south(ferry) -> None:
    ok(ferry("create-institution", "NORTH", "North"))
    ok(ferry("create-institution", "SOUTH", "South"))
    node = ("--host", "127.0.0.1", "--port", "104")
    ok(ferry("add-node", "--institution", "SOUTH", "--ae-title", "SOUTH_PACS", *node, "--write"))
    ok(ferry("add-node", "--institution", "NORTH", "--ae-title", "NORTH_RIS", *node, "--worklist"))


def test_nodes_with_their_rights(ferry, archive, north_south):
    added = ok(
        ferry(
            "add-node",
            "--institution",
            "NORTH",
            "--ae-title",
            "NORTH_PACS",
            "--host",
            "pacs.north",
            "--port",
            "11112",
            "--query",
            "--write",
            "--move-destination",
            "--tls",
            "--retrieve-method",
            "get",
            "--reconcile-with",
            "NORTH_RIS",
            "--description",
            "main PACS",
            "--any-address",
        )
    )
    assert "added node" in added.err and "NORTH_PACS at pacs.north:11112" in added.err
    node = find_node(archive.engine, "NORTH_PACS")
    ris = find_node(archive.engine, "NORTH_RIS")
    assert (node.can_query, node.can_write, node.move_destination, node.tls) == (True,) * 4
    assert (node.worklist, node.retrieve_method, node.reconcile_with_pk) == (False, "get", ris.pk)
    assert node.restricted and node.description == "main PACS"
    assert node.any_address and not ris.any_address  # only with --any-address (NAT)
    [permission] = store.list_node_permissions(archive.engine, node.pk)
    assert (permission.subject, permission.can_query, permission.can_write) == ("NORTH", True, True)
    assert ris.worklist and not (ris.can_query or ris.can_write)
    assert store.list_node_permissions(archive.engine, ris.pk) == []
    header, *rows = ok(ferry("nodes", "--institution", "NORTH")).rows()
    assert header == [
        "pk",
        "institution",
        "ae_title",
        "address",
        "query",
        "write",
        "move-destination",
        "worklist",
        "tls",
        "restricted",
        "retrieve",
        "reconcile-with",
        "any-address",
    ]
    assert [row[2:] for row in rows] == [
        ["NORTH_PACS", "pacs.north:11112", "yes", "yes", "yes", "no", "yes", "yes", "get",
         "NORTH_RIS", "yes"],
        ["NORTH_RIS", "127.0.0.1:104", "no", "no", "no", "yes", "no", "yes", "move", "-", "no"],
    ]  # fmt: skip
    assert len(ok(ferry("nodes")).rows()) == 4  # header and all three


def test_routes_are_added_listed_and_removed(ferry, archive, north_south):
    added = ok(
        ferry(
            "add-route",
            "--ae-title",
            "FERRY_TO_SOUTH",
            "--to",
            "SOUTH",
            "--node",
            "SOUTH_PACS",
            "--quiet-seconds",
            "120",
            "--accept-unknown-callers",
        )
    )
    assert "FERRY_TO_SOUTH go to SOUTH, node SOUTH_PACS, 120 s" in added.err
    ok(ferry("add-route", "--ae-title", "TO_NORTH", "--to", "NORTH", "--description", "reads"))
    [to_south, to_north] = list_routes(archive.engine)
    assert (to_south.called_ae_title, to_south.quiet_seconds) == ("FERRY_TO_SOUTH", 120)
    assert to_south.accept_unknown_callers and to_south.destination_node_pk is not None
    assert (to_north.destination_node_pk, to_north.quiet_seconds) == (None, 30)
    header, *rows = ok(ferry("routes")).rows()
    assert header == [
        "pk",
        "called_ae_title",
        "to",
        "node",
        "quiet_seconds",
        "unknown-callers",
        "description",
    ]
    assert [row[1:] for row in rows] == [
        ["FERRY_TO_SOUTH", "SOUTH", "SOUTH_PACS", "120", "yes"],
        ["TO_NORTH", "NORTH", "worklist", "30", "no", "reads"],
    ]
    assert [row[1] for row in ok(ferry("routes", "--institution", "NORTH")).rows()[1:]] == [
        "TO_NORTH"
    ]
    removed = ok(ferry("remove-route", "FERRY_TO_SOUTH"))
    assert "removed route" in removed.err
    assert [r.called_ae_title for r in list_routes(archive.engine)] == ["TO_NORTH"]
    again = ferry("remove-route", "FERRY_TO_SOUTH")
    assert again.code == 1 and "no route with AE title 'FERRY_TO_SOUTH'" in again.err


NODE = ("--host", "h", "--port", "104")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add-route", "--ae-title", "FERRY", "--to", "NORTH"), "Ferry's own AE title"),
        (("add-route", "--ae-title", "A\\B", "--to", "NORTH"), "AE title"),
        (("add-route", "--ae-title", "X" * 17, "--to", "NORTH"), "AE title"),
        (("add-route", "--ae-title", "TO_X", "--to", "NOPE"), "no institution 'NOPE'"),
        (("add-route", "--ae-title", "TO_X", "--to", "NORTH", "--node", "NOBODY"),
         "no node with AE title 'NOBODY'"),
        (("add-route", "--ae-title", "TO_X", "--to", "NORTH", "--node", "SOUTH_PACS"),
         "node SOUTH_PACS does not belong to NORTH"),
        (("add-route", "--ae-title", "TO_X", "--to", "NORTH", "--quiet-seconds", "0"),
         "quiet time must be 1-86400 seconds"),
        (("add-route", "--ae-title", "TO_X", "--to", "NORTH", "--quiet-seconds", "86401"),
         "quiet time"),
        (("add-route", "--ae-title", "TAKEN", "--to", "SOUTH"), "route AE title 'TAKEN' is taken"),
        (("remove-route", "NOPE"), "no route"),
        (("add-node", "--institution", "NORTH", "--ae-title", "N", "--host", "h", "--port",
          "70000"), "port 70000 is outside 1-65535"),
        (("add-node", "--institution", "NOPE", "--ae-title", "N", *NODE), "no institution"),
        (("add-node", "--institution", "NORTH", "--ae-title", "NORTH_RIS", *NODE), "taken"),
        (("add-node", "--institution", "NORTH", "--ae-title", "N", *NODE, "--reconcile-with",
          "NOBODY"), "no node with AE title 'NOBODY'"),
        (("add-node", "--institution", "SOUTH", "--ae-title", "N", *NODE, "--reconcile-with",
          "NORTH_RIS"), "node NORTH_RIS does not belong to SOUTH"),
        (("add-node", "--institution", "SOUTH", "--ae-title", "N", *NODE, "--reconcile-with",
          "SOUTH_PACS"), "worklist is off"),
        (("jobs", "--status", "lost"), "status 'lost' is not one of queued, running"),
        (("retry-job", "4242"), "no job 4242"),
        (("transfers", "--status", "lost"), "status 'lost' is not one of collecting"),
        (("transfers", "--institution", "NOPE"), "no institution 'NOPE'"),
    ],
)  # fmt: skip
def test_refusals_say_why(ferry, archive, north_south, args, message):
    ok(ferry("add-route", "--ae-title", "TAKEN", "--to", "SOUTH"))
    ran = ferry(*args)
    assert ran.code == 1, ran.out
    assert ran.err.startswith("ferry admin: ") and message in ran.err, ran.err
    assert "Traceback" not in ran.err
    assert len(store.list_nodes(archive.engine)) == 2 and len(list_routes(archive.engine)) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("add-route", "--to", "NORTH"),
        ("add-route", "--ae-title", "X", "--to", "NORTH", "--quiet-seconds", "soon"),
        ("add-node", "--institution", "NORTH", "--ae-title", "N", *NODE, "--retrieve-method", "x"),
        ("retry-job", "first"),
        ("retry-job", "99999999999"),
        ("jobs", "--limit", "0"),
    ],
)
def test_usage_errors(ferry, args):
    ran = ferry(*args)
    assert ran.code == 2 and "usage:" in ran.err


def test_jobs_are_listed_and_parked_ones_retried(ferry, archive):
    queue = JobQueue(archive.engine)
    waiting = queue.add("forward-study", {"transfer_pk": 1})
    queue.add("forward-study", {"transfer_pk": 2}, max_attempts=1)
    claimed = queue.claim(frozenset({"forward-study"}))
    assert claimed is not None and claimed.pk == waiting  # the oldest first
    queue.fail(claimed, "association rejected:\n called AE title not recognised")
    parked = queue.claim(frozenset({"forward-study"}))
    queue.fail(parked, "C-STORE refused", permanent=True)
    header, *rows = ok(ferry("jobs")).rows()
    assert header == ["pk", "kind", "status", "attempts", "run_after", "last_error"]
    assert [row[:4] for row in rows] == [
        [str(parked.pk), "forward-study", "parked", "1/1"],
        [str(waiting), "forward-study", "queued", "1/8"],
    ]
    assert " ".join(rows[1][5:]) == "association rejected: called AE title not recognised"
    only = ok(ferry("jobs", "--status", "parked")).rows()[1:]
    assert [row[0] for row in only] == [str(parked.pk)]
    assert ok(ferry("jobs", "--kind", "notify")).rows() == [header]
    retried = ok(ferry("retry-job", str(parked.pk)))
    assert f"job {parked.pk} is queued again" in retried.err
    job = queue.get(parked.pk)
    assert job is not None and (job.status, job.attempts) == ("queued", 0)
    again = ferry("retry-job", str(parked.pk))
    assert again.code == 1 and "is queued; only parked jobs are retried" in again.err
    unreconciled = queue.add("forward-study", {"transfer_pk": 3}, max_attempts=1)
    claimed = queue.claim(frozenset({"forward-study"}))
    while claimed is not None and claimed.pk != unreconciled:
        claimed = queue.claim(frozenset({"forward-study"}))
    assert claimed is not None
    queue.fail(claimed, "no worklist match", permanent=True)
    ok(ferry("retry-job", str(unreconciled), "--as-sent"))
    job = queue.get(unreconciled)
    assert job is not None and job.status == "queued"
    assert '"as_sent":true' in job.payload and '"transfer_pk":3' in job.payload


def test_transfers_by_institution_and_status(ferry, archive, north_south):
    north = store.find_institution(archive.engine, "NORTH").pk
    south = store.find_institution(archive.engine, "SOUTH").pk
    pacs = find_node(archive.engine, "SOUTH_PACS").pk
    now = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    with Session(archive.engine) as session:
        for uid, sender, destination, node, status, reason in (
            ("1.2.3", north, south, pacs, "delivered", ""),
            ("1.2.4", north, south, pacs, "failed", "the node\nrefused every instance"),
            ("1.2.5", south, north, None, "on-worklist", ""),
        ):
            session.add(
                Transfer(
                    study_instance_uid=uid,
                    sender_institution_pk=sender,
                    destination_institution_pk=destination,
                    destination_node_pk=node,
                    calling_ae_title="CT1",
                    status=status,
                    reason=reason,
                    instances=12,
                    created_at=now,
                    last_instance_at=now,
                )
            )
        session.commit()
    header, *rows = ok(ferry("transfers")).rows()
    assert header == [
        "pk",
        "study",
        "from",
        "to",
        "node",
        "status",
        "instances",
        "last_instance",
        "reason",
    ]
    assert [row[1:8] for row in rows] == [
        ["1.2.5", "SOUTH", "NORTH", "worklist", "on-worklist", "12", "2026-11-28T09:30:00Z"],
        ["1.2.4", "NORTH", "SOUTH", "SOUTH_PACS", "failed", "12", "2026-11-28T09:30:00Z"],
        ["1.2.3", "NORTH", "SOUTH", "SOUTH_PACS", "delivered", "12", "2026-11-28T09:30:00Z"],
    ]
    assert " ".join(rows[1][8:]) == "the node refused every instance"
    failed = ok(ferry("transfers", "--institution", "SOUTH", "--status", "failed")).rows()
    assert [row[1] for row in failed[1:]] == ["1.2.4"]
    assert ok(ferry("transfers", "--status", "partial")).rows() == [header]
