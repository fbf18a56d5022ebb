"""`ferry dimse echo|find|retrieve|forward` against real peers (storescp, a pynetdicom PACS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from archive.store import Archive
from ferry.settings import Settings
from foundation.jobs import JobQueue
from policy.models import Node
from tests._peers import storescp as dcmtk_storescp
from tests.conftest import free_port, sqlite_only
from tests.dimse.test_remote import RemotePacs
from tests.factories import StudySpec, ct_slice
from tests.policy._people import add_institution

pytestmark = sqlite_only


@pytest.fixture
def ferry(ferry_cli):  # type: ignore[no-untyped-def]
    return lambda *args: ferry_cli("dimse", *args)


def _node(archive: Archive, ae_title: str, port: int, **rights: object) -> None:
    institution = add_institution(archive.engine, f"I{free_port()}")
    with Session(archive.engine) as session:
        session.add(
            Node(
                institution_pk=institution, ae_title=ae_title, host="127.0.0.1", port=port, **rights
            )
        )
        session.commit()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    with dcmtk_storescp(tmp_path, port, ae_title="PACS"):
        yield port


def test_echo_tells_whether_a_node_answers(ferry, archive: Archive, storescp: int) -> None:  # type: ignore[no-untyped-def]
    _node(archive, "PACS", storescp, can_write=True)
    _node(archive, "GONE", free_port())
    code, out, _ = ferry("echo", "--node", "PACS")
    assert code == 0 and "status 0x0000" in out
    code, _, err = ferry("echo", "--node", "GONE")
    assert code == 1 and "GONE" in err
    code, _, err = ferry("echo", "--node", "NOBODY")
    assert code == 1 and "no node with AE title 'NOBODY'" in err


def test_find_and_retrieve_a_study_from_a_node(ferry, archive: Archive) -> None:  # type: ignore[no-untyped-def]
    peer = RemotePacs("REMOTE", {})
    try:
        spec = StudySpec(patient_id="CLI-7")
        peer.add_study(spec, 2)
        _node(archive, "REMOTE", peer.port, can_query=True, retrieve_method="get")
        code, out, err = ferry("find", "--node", "REMOTE", "-k", "PatientID=CLI-7")
        assert code == 0, err
        assert spec.study_uid in out and "1 match(es)" in err
        code, _, err = ferry("find", "--node", "REMOTE", "-k", "NotAKeyword=1")
        assert code == 1 and "NotAKeyword" in err
        code, out, err = ferry("retrieve", "--node", "REMOTE", "--study", spec.study_uid)
        assert code == 0, err
        assert "get: 2 completed, 0 failed" in out
        assert len(archive.find_instances(spec.study_uid)) == 2
    finally:
        peer.stop()


def test_forward_queues_a_delivery(
    ferry, settings: Settings, archive: Archive, storescp: int
) -> None:  # type: ignore[no-untyped-def]
    _node(archive, "PACS", storescp, can_write=True)
    code, _, err = ferry("forward", "--node", "PACS", "--study", "1.2.3.4")
    assert code == 1 and "not in Ferry" in err
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    spec = StudySpec()
    path = settings.spool_dir / "one.dcm"
    ct_slice(spec=spec).save_as(path, enforce_file_format=True)
    assert archive.store_files([path])[0].stored
    code, out, err = ferry("forward", "--node", "PACS", "--study", spec.study_uid)
    assert code == 0, err
    queued = JobQueue(archive.engine).list(kind="forward-study")
    assert [job.status for job in queued] == ["queued"]
    assert f"job {queued[0].pk} queued" in out
