"""The worklist shows each item's days left before retention deletes the receiver's copy."""

# ruff: noqa: F811  (the transfers API's `world` fixture, imported, is each test's argument)

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from exchange.holds import NewHold, place_hold
from exchange.retention_defaults import RetentionDefaults
from exchange.retention_terms import set_policy
from policy import store
from retention.config import RetentionConfig
from retention.sweeper import Sweeper
from tests.conftest import issue_token_for
from tests.portal.test_transfers_api import World, world  # noqa: F401  (the fixture)


def _item(world: World) -> dict[str, Any]:
    page = world.get("b-receiver", "/worklist", params={"institution": "B"})
    assert page.status_code == 200, page.text
    [item] = page.json()["items"]
    return dict(item)


def test_days_left_count_down_from_arrival_and_a_hold_stops_them(world: World) -> None:
    sent = world.send(send=True)
    assert sent.status_code == 201, sent.text
    arrived = world.clock[0]
    item = _item(world)
    assert item["retention_days_left"] == 15 and not item["retention_held"]
    engine = world.server.archive.engine
    set_policy(engine, world.pks["B"], {"worklist_days": 30}, RetentionDefaults(),
               actor="test", now=arrived)  # fmt: skip
    world.clock[0] = arrived + timedelta(days=10)
    assert _item(world)["retention_days_left"] == 20
    world.clock[0] = arrived + timedelta(days=31)
    Sweeper(world.server.archive, RetentionConfig(pause_seconds=0), lambda: world.clock[0]).run()
    assert _item(world)["retention_days_left"] == 0
    uid = world.studies["one"].study_uid
    found = world.http.get(
        "/dicom-web/studies", params={"StudyInstanceUID": uid}, headers=world.as_("b-receiver")
    )
    assert found.status_code == 200 and found.json() == []  # B's grant went; A keeps its own


def test_a_held_item_shows_no_countdown(world: World) -> None:
    assert world.send(send=True).status_code == 201
    uid = world.studies["one"].study_uid
    until = world.clock[0] + timedelta(days=100)
    hold = NewHold(world.pks["B"], "clinical review", until, study_uid=uid)
    place_hold(world.server.archive.engine, hold, actor="test", now=world.clock[0])
    item = _item(world)
    assert item["retention_held"] and item["retention_days_left"] is None


def test_a_study_delivered_to_a_node_keeps_the_node_s_period(world: World) -> None:
    import orjson

    sent = world.send(node="PACS_B", send=True)
    assert sent.status_code == 201, sent.text
    arrived = world.clock[0]
    engine = world.server.archive.engine
    set_policy(engine, world.pks["B"], {"node_days": 3, "worklist_days": 30}, RetentionDefaults(),
               actor="test", now=arrived)  # fmt: skip
    world.clock[0] = arrived + timedelta(days=2)
    sweeper = Sweeper(
        world.server.archive, RetentionConfig(pause_seconds=0), lambda: world.clock[0]
    )
    assert sweeper.run().grants_removed == 0
    world.clock[0] = arrived + timedelta(days=3, minutes=1)
    assert sweeper.run().grants_removed == 1
    [removed] = world.audit(action="retention-grant-removed")
    assert removed.institution_pk == world.pks["B"]
    assert orjson.loads(removed.detail)["kind"] == "node"


def test_a_receiver_is_warned_about_its_transfer(world: World) -> None:
    import orjson

    from foundation.jobs import JobQueue

    sent = world.send(send=True)
    assert sent.status_code == 201, sent.text
    engine = world.server.archive.engine
    world.clock[0] += timedelta(days=13, hours=1)
    sweeper = Sweeper(
        world.server.archive, RetentionConfig(pause_seconds=0), lambda: world.clock[0]
    )
    assert sweeper.run().warnings_queued >= 1
    payloads = [orjson.loads(job.payload) for job in JobQueue(engine).list(kind="notify")]
    warning = [p for p in payloads if p["event"] == "study-expiring"]
    assert [(p["institution_pk"], p["subject"].split(":")[0]) for p in warning] == [
        (world.pks["B"], "transfer")
    ]


def test_a_transfer_s_reports_leave_with_its_last_study(world: World) -> None:
    from datetime import UTC, datetime

    sent = world.send(reports=[{"text": "Fracture of the left radius."}], send=True)
    assert sent.status_code == 201, sent.text
    tid = sent.json()["id"]
    assert world.get("b-receiver", f"/transfers/{tid}").json()["reports"]
    later = datetime.now(UTC) + timedelta(days=40)  # past the owner's and the receiver's time
    world.clock[0] = later
    report = Sweeper(world.server.archive, RetentionConfig(pause_seconds=0), lambda: later).run()
    assert world.studies["one"].study_uid in report.studies_deleted
    seen = world.get("a-sender", f"/transfers/{tid}").json()
    assert seen["reports"] == [] and seen["studies"][0]["in_archive"] is False


def test_the_owner_s_hold_keeps_the_receiver_s_copy_and_says_so(world: World) -> None:
    sent = world.send(send=True)
    assert sent.status_code == 201, sent.text
    tid = sent.json()["id"]
    uid = world.studies["one"].study_uid
    engine = world.server.archive.engine
    stranger = NewHold(world.pks["C"], "not theirs", world.clock[0] + timedelta(days=100),
                       study_uid=uid)  # fmt: skip
    place_hold(engine, stranger, actor="test", now=world.clock[0])  # C holds nothing of it
    assert not _item(world)["retention_held"]
    owner = NewHold(world.pks["A"], "legal claim", world.clock[0] + timedelta(days=100),
                    study_uid=uid)  # fmt: skip
    place_hold(engine, owner, actor="test", now=world.clock[0])
    item = _item(world)
    assert item["retention_held"] and item["retention_days_left"] is None
    shown = world.get("b-receiver", f"/transfers/{tid}").json()
    assert shown["retention_held"] and shown["retention_due_at"] is None
    world.clock[0] += timedelta(days=40)  # past the receiver's period: the hold keeps its copy
    Sweeper(world.server.archive, RetentionConfig(pause_seconds=0), lambda: world.clock[0]).run()
    found = world.http.get(
        "/dicom-web/studies", params={"StudyInstanceUID": uid}, headers=world.as_("b-receiver")
    )
    assert found.status_code == 200 and len(found.json()) == 1


def test_a_transfer_expires_with_the_receiver_s_copy_and_is_deleted_with_its_studies(
    world: World,
) -> None:
    one, two = world.studies["one"].study_uid, world.studies["two"].study_uid
    tid = world.send(studies=[one, two], send=True).json()["id"]
    other = world.send(studies=[one], send=True).json()["id"]
    cancelled = world.send(studies=[two], send=True).json()["id"]
    assert world.post("a-sender", f"/transfers/{cancelled}/cancel").status_code == 200
    arrived, engine = world.clock[0], world.server.archive.engine
    set_policy(engine, world.pks["B"], {"worklist_days": 5}, RetentionDefaults(),
               actor="test", now=arrived)  # fmt: skip
    set_policy(engine, world.pks["A"], {"upload_days": 20}, RetentionDefaults(),
               actor="test", now=arrived)  # fmt: skip
    sweeper = Sweeper(
        world.server.archive, RetentionConfig(pause_seconds=0), lambda: world.clock[0]
    )
    world.clock[0] = arrived + timedelta(days=5, minutes=1)
    assert sweeper.run().grants_removed == 2  # B's grants (the second transfer shares one)
    for who in ("a-sender", "b-receiver"):
        seen = world.get(who, f"/transfers/{tid}").json()
        assert seen["status"] == "expired", who
        assert seen["history"][-1]["actor"] == "ferry:retention"
    assert world.get("a-sender", f"/transfers/{other}").json()["status"] == "expired"
    assert world.get("a-sender", f"/transfers/{cancelled}").json()["status"] == "cancelled"
    zipped = world.http.get(f"/api/transfers/{tid}/download.zip", headers=world.as_("b-receiver"))
    assert zipped.status_code == 403  # nothing of it is B's any more
    world.clock[0] = datetime.now(UTC) + timedelta(days=20, minutes=1)  # A's own clock: stored now
    assert sorted(sweeper.run().studies_deleted) == sorted([one, two])
    history = world.get("a-sender", f"/transfers/{tid}").json()["history"]
    assert [h["status"] for h in history[-2:]] == ["expired", "deleted"]
    assert world.get("a-sender", f"/transfers/{cancelled}").json()["status"] == "cancelled"


def test_a_study_deleted_over_dicomweb_ends_its_transfers(world: World) -> None:
    engine, uid = world.server.archive.engine, world.studies["one"].study_uid
    tid = world.send(studies=[uid], send=True).json()["id"]
    both = world.send(studies=[uid, world.studies["two"].study_uid], send=True).json()["id"]
    admin = store.create_user(engine, "a-admin@ferry.test")
    store.set_membership(engine, admin.pk, world.pks["A"], "admin")
    world.tokens["a-admin"] = issue_token_for(world.server.app, world.server.archive, admin.pk)
    deleted = world.http.delete(f"/dicom-web/studies/{uid}", headers=world.as_("a-admin"))
    assert deleted.status_code == 204, deleted.text
    seen = world.get("b-receiver", f"/transfers/{tid}").json()
    assert seen["status"] == "deleted"
    assert seen["history"][-1]["actor"] == "user:a-admin@ferry.test"
    assert world.get("b-receiver", f"/transfers/{both}").json()["status"] == "on-worklist"
