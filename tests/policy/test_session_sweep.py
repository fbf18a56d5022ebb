"""Ended sign-in sessions (revoked or expired) are removed by the job worker's periodic sweep,
on the worker's clock (injected here); what is live stays, and what is removed stays refused.
Real uvicorn, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from dimse.context import BridgeContext
from ferry.background import build_worker
from foundation.jobs import Worker
from policy.auth_epoch import read_auth_epoch
from policy.models import User
from policy.sessions import (
    UserSession,
    open_session,
    remove_ended_sessions,
    revoke_session,
    session_sweeper,
)
from tests.conftest import RunningServer
from tests.policy._people import PASSWORD, add_institution, add_user


class Clock:
    """The worker's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def sids(engine: Engine) -> set[str]:
    """The sessions of the test's people (the server's own tester has one too)."""
    with Session(engine) as session:
        theirs = select(UserSession.sid).join(User).where(~col(User.email).startswith("tester-"))
        rows = session.exec(theirs)
        return set(rows)


def count(engine: Engine) -> int:
    return len(sids(engine))


@pytest.fixture
def people(server: RunningServer) -> list[str]:
    engine = server.archive.engine
    radb = add_institution(engine, "RADB")
    emails = ["ann@ferry.test", "bob@ferry.test", "cyd@ferry.test"]
    for email in emails:
        add_user(engine, email, memberships={radb: "viewer"})
    return emails


@pytest.fixture
def clients(server: RunningServer) -> Iterator[list[httpx.Client]]:
    made = [httpx.Client(base_url=server.base_url, timeout=30) for _ in range(3)]
    yield made
    for client in made:
        client.close()


def test_the_worker_removes_ended_sessions_on_its_clock_and_keeps_live_ones(
    server: RunningServer, people: list[str], clients: list[httpx.Client]
) -> None:
    engine, settings = server.archive.engine, server.settings
    ann, bob, cyd = clients
    for client, email in ((ann, people[0]), (bob, people[1])):
        answer = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
    grant = cyd.post("/auth/token", json={"email": people[2], "password": PASSWORD}).json()
    csrf = ann.cookies["ferry_csrf"]
    assert ann.post("/auth/logout", headers={"x-csrf-token": csrf}).status_code == 204
    assert count(engine) == 3

    clock = Clock()
    worker: Worker = build_worker(BridgeContext(settings.dimse(), server.archive, clock), settings)
    worker.run_ticks()  # Ann signed out: her session goes; Bob's and Cyd's are live
    assert count(engine) == 2
    assert bob.get("/auth/me").status_code == 200

    clock.now += timedelta(seconds=settings.refresh_token_seconds + 1)
    worker.run_ticks()  # both expired on the worker's clock: gone
    assert count(engine) == 0
    # A removed session is an ended one, to every way in (on the server's own clock they
    # have not expired yet): the cookie, the access token and the refresh token are refused.
    assert bob.get("/auth/me").status_code == 401
    bearer = {"authorization": f"Bearer {grant['access_token']}"}
    assert cyd.get("/auth/me", headers=bearer).status_code == 401
    refreshed = cyd.post("/auth/token", json={"grant_type": "refresh_token",
                                              "refresh_token": grant["refresh_token"]})  # fmt: skip
    assert refreshed.status_code == 401


def test_the_sweep_runs_at_most_once_an_interval_and_in_batches(server: RunningServer) -> None:
    engine = server.archive.engine
    user = add_user(engine, "dee@ferry.test")
    clock = Clock()
    start = clock.now
    ended = [open_session(engine, user, timedelta(minutes=5), start) for _ in range(5)]
    live = open_session(engine, user, timedelta(days=2), start)
    sweep = session_sweeper(engine, clock, timedelta(hours=1), batch=2)

    assert sweep() == 0  # nothing has ended yet
    clock.now = start + timedelta(minutes=30)
    assert sweep() is None and count(engine) == 6  # not due: the last sweep was 30 minutes ago
    clock.now = start + timedelta(hours=1)
    # Statements of at most two, until none is left (the server's tester's ended too)
    assert sweep() == 5 + 1 and sids(engine) == {live}

    revoke_session(engine, live, clock.now)
    clock.now += timedelta(minutes=59)
    assert sweep() is None and sids(engine) == {live}
    clock.now += timedelta(minutes=1)
    assert sweep() == 1 and count(engine) == 0
    assert ended  # every one of them went with the first due sweep


def test_a_sweep_with_nothing_to_remove_leaves_the_revocation_epoch_alone(
    server: RunningServer,
) -> None:
    """Removing rows bumps the epoch (a trigger); a sweep that finds nothing writes nothing, so
    every process keeps the principals it built."""
    engine = server.archive.engine
    user = add_user(engine, "eve@ferry.test")
    now = datetime.now(UTC)
    open_session(engine, user, timedelta(hours=1), now)
    before = read_auth_epoch(engine)
    assert remove_ended_sessions(engine, now) == 0
    assert read_auth_epoch(engine) == before
    later = now + timedelta(hours=2)  # Eve's has ended (and the server's tester's too, maybe)
    assert remove_ended_sessions(engine, later) >= 1 and sids(engine) == set()
    assert read_auth_epoch(engine) != before
