"""A running Ferry (HTTP and the DIMSE bridge) with one institution and its nodes, and DCMTK."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from archive.store import Archive
from audit.models import AuditEvent
from dimse.server import Bridge
from policy.models import Node
from tests.conftest import (
    RunningServer,
    free_port,
    make_settings,
    run_server,
    skip_unless_available,
)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        skip_unless_available("dcmtk", f"{tool} is not installed (apt-get install dcmtk)")
    return str(path)


def run_dcmtk(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs a DCMTK tool with Nagle off; its output is kept for the assertions."""
    return subprocess.run(
        [dcmtk(tool), *args], capture_output=True, text=True, timeout=timeout, env=DCMTK_ENV
    )


class Clock:
    """A clock tests move by hand (core hours, quiet times, backoff)."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.now += timedelta(**delta)


@dataclass
class Dimse:
    """Ferry's HTTP server and DIMSE bridge, sharing one archive."""

    web: RunningServer
    bridge: Bridge
    clock: Clock
    nodes: dict[str, int] = field(default_factory=dict)

    @property
    def archive(self) -> Archive:
        return self.web.archive

    @property
    def port(self) -> int:
        return self.bridge.port

    @property
    def ae_title(self) -> str:
        return self.web.settings.dicom_ae_title

    @property
    def institution_pk(self) -> int:
        return self.web.institution_pk

    def add_node(self, ae_title: str, institution_pk: int | None = None, **values: Any) -> int:
        """A node row; defaults: this institution, localhost, may query and write."""
        values = {"host": "127.0.0.1", "port": 104, "can_query": True, "can_write": True} | values
        with Session(self.archive.engine) as session:
            node = Node(
                institution_pk=institution_pk or self.institution_pk, ae_title=ae_title, **values
            )
            session.add(node)
            session.commit()
            assert node.pk is not None
            self.nodes[ae_title] = node.pk
            return node.pk


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dimse(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Dimse]:
    settings = make_settings(tmp_path, database_url, dicom_port=free_port())
    from ferry.app import build_archive

    archive = build_archive(settings)
    try:
        for web in run_server(settings, archive):
            bridge = Bridge(settings.dimse(), archive, clock=clock)
            bridge.start()
            try:
                running = Dimse(web, bridge, clock)
                running.add_node("MODALITY")
                yield running
            finally:
                bridge.stop()
    finally:
        archive.engine.dispose()


def audit_events(dimse: Dimse, action: str, *, protocol: str | None = None) -> list[AuditEvent]:
    """The trail's events of one action, oldest first; only those over `protocol` if named."""
    with Session(dimse.archive.engine) as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.pk)
        events = list(session.exec(query))
    if protocol is None:
        return events
    return [event for event in events if json.loads(event.detail).get("protocol") == protocol]
