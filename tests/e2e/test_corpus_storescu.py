"""pydicom's test corpus sent by DCMTK's storescu, a file an association, to Ferry's SCP.

Only what storescu can send is walked: it reads the file, proposes its SOP class and transfer
syntax, and sends it; a file it will not send (not DICOM, no SOP class it knows) says so and
is passed over. Duplicates are refused here, as by default.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from archive.outcomes import DUPLICATE_SOP_INSTANCE
from dimse.server import Bridge
from policy.models import Node
from tests.conftest import RunningServer, free_port
from tests.dimse.conftest import run_dcmtk
from tests.e2e._corpus import (
    AS_STORED,
    LENIENT_READING,
    REFUSED,
    assert_refusal_is_true,
    assert_served,
    corpus_files,
    identity,
    instance_url,
    relative,
)

pytestmark = [LENIENT_READING, pytest.mark.slow]
SUCCESS = 0x0000
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9A-Fa-f]{4})")
_COMMENT = re.compile(r"\(0000,0902\) LO \[([^]]*)\]")


def SETTINGS() -> dict[str, Any]:
    return {"dicom_port": free_port()}


@pytest.fixture(scope="module")
def bridge(corpus_server: RunningServer) -> Iterator[Bridge]:
    running = Bridge(corpus_server.settings.dimse(), corpus_server.archive)
    running.start()
    with Session(corpus_server.archive.engine) as session:
        session.add(
            Node(
                institution_pk=corpus_server.institution_pk,
                ae_title="MODALITY",
                host="127.0.0.1",
                port=104,
                can_query=True,
                can_write=True,
            )
        )
        session.commit()
    try:
        yield running
    finally:
        running.stop()


def storescu(port: int, path: Path) -> tuple[int | None, str]:
    """Send one file: the C-STORE response status (None: storescu sent nothing), its comment."""
    sent = run_dcmtk(
        "storescu",
        "-R",
        "-d",
        "-aet",
        "MODALITY",
        "-aec",
        "FERRY",
        "127.0.0.1",
        str(port),
        str(path),
    )
    output = sent.stdout + sent.stderr
    response = output.partition("C-STORE RSP")[2]
    status = _STATUS.search(response)
    comment = _COMMENT.search(response)
    return (int(status.group(1), 16) if status else None), (comment.group(1) if comment else "")


def send_all(port: int, paths: list[Path]) -> dict[str, tuple[int | None, str]]:
    """Every file sent, four associations at a time; files naming the same SOP Instance UID go
    one after another in the corpus's order, so which of them is the duplicate stays fixed."""
    by_instance: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        try:
            key = identity(path)[2]
        except Exception:  # not readable as DICOM: storescu will say so on its own
            key = str(path)
        by_instance[key].append(path)

    def send_group(group: list[Path]) -> list[tuple[str, tuple[int | None, str]]]:
        return [(relative(path), storescu(port, path)) for path in group]

    with ThreadPoolExecutor(4) as pool:
        return {
            name: outcome
            for sent in pool.map(send_group, by_instance.values())
            for name, outcome in sent
        }


def test_what_storescu_sends_is_stored_and_served_or_refused_truly(
    corpus_server: RunningServer, bridge: Bridge
) -> None:
    server = corpus_server
    outcomes = send_all(server.settings.dicom_port, corpus_files())
    stored = {name for name, (status, _) in outcomes.items() if status == SUCCESS}
    with server.http() as web:
        for path in corpus_files():
            name = relative(path)
            status, comment = outcomes[name]
            if status is None:  # DCMTK did not send it (cannot read it, or no context)
                continue
            if status == SUCCESS:
                assert name not in REFUSED, f"{name} was stored"
                assert_served(web, server, path, as_sent=False)
            elif status == DUPLICATE_SOP_INSTANCE:
                other = web.get(
                    instance_url(server, *identity(path)), headers={"Accept": AS_STORED}
                )
                assert other.status_code == 200, name  # stored from another file
            else:
                assert_refusal_is_true(name, status, comment)
    sent = {name for name, (status, _) in outcomes.items() if status is not None}
    assert len(stored) >= 50 and len(sent) >= 100, (len(stored), len(sent))  # storescu works
