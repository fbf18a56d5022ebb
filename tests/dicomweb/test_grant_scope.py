"""What a grant gives (reading, downloading unless narrowed) and what it never gives (deleting,
storing into the study); and that a granted study can still be deleted by its owner."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from sqlmodel import Session, select

from archive.models import StudyGrant
from audit.search import AuditQuery, search_events
from exchange.grants import grant_study
from tests import factories
from tests.conftest import RunningServer
from tests.policy._people import add_institution

VIEW_ONLY = ("search", "read-metadata", "read-pixels")


def _store(server: RunningServer, *instances: Dataset) -> None:
    client = DICOMwebClient(server.dicomweb_url, headers=server.headers)
    client.store_instances(list(instances))


def _study(server: RunningServer) -> list[Dataset]:
    """One study of two series: two instances in the first, one in the second."""
    spec = factories.StudySpec()
    second = spec.new_series(2)
    instances = [
        factories.ct_slice(spec=spec),
        factories.ct_slice(spec=dataclasses.replace(spec, instance_number=2)),
        factories.ct_slice(spec=second),
    ]
    _store(server, *instances)
    return instances


def _paths(ds: Dataset) -> dict[str, str]:
    study = f"/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    return {"instance": f"{series}/instances/{ds.SOPInstanceUID}", "series": series, "study": study}


def _count(server: RunningServer, study_uid: str) -> int:
    response = httpx.get(
        f"{server.dicomweb_url}/studies/{study_uid}/metadata", headers=server.headers, timeout=30
    )
    return len(response.json()) if response.status_code == 200 else 0


def _events(server: RunningServer, **criteria: str) -> list:
    return list(search_events(server.archive.engine, AuditQuery(**criteria), limit=500).entries)


def test_a_grant_never_lets_the_holder_delete_the_owners_data(server: RunningServer) -> None:
    holder = add_institution(server.archive.engine, "HOLDER")
    admin = server.token_for("admin@holder.test", {holder: "admin,sender,receiver,viewer"})
    instances = _study(server)
    study_uid = instances[0].StudyInstanceUID
    grant_study(server.archive.engine, study_uid, holder, reason="transfer")
    with httpx.Client(headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:
        assert http.get(server.dicomweb_url + _paths(instances[0])["study"]).status_code == 200
        for level in ("instance", "series", "study"):
            response = http.delete(server.dicomweb_url + _paths(instances[0])[level])
            assert response.status_code == 404, (level, response.text)
    assert _count(server, study_uid) == 3
    denied = _events(server, actor="user:admin@holder.test", action="delete", outcome="denied")
    assert [e.rule for e in denied] == ["grant-excludes-action"] * 3
    assert {e.study_uid for e in denied} == {study_uid}


def test_a_view_only_grant_shows_the_study_but_gives_no_download(server: RunningServer) -> None:
    holder = add_institution(server.archive.engine, "HOLDER")
    receiver = server.token_for("r@holder.test", {holder: "receiver"})
    (ds, *_rest) = _study(server)
    grant_study(server.archive.engine, ds.StudyInstanceUID, holder, actions=VIEW_ONLY)
    paths = _paths(ds)
    with httpx.Client(headers={"Authorization": f"Bearer {receiver}"}, timeout=30) as http:
        found = http.get(f"{server.dicomweb_url}/studies?StudyInstanceUID={ds.StudyInstanceUID}")
        assert len(found.json()) == 1
        assert http.get(f"{server.dicomweb_url}{paths['instance']}/metadata").status_code == 200
        assert http.get(f"{server.dicomweb_url}{paths['instance']}/rendered").status_code == 200
        refused = http.get(server.dicomweb_url + paths["instance"])
        assert refused.status_code == 404
    denied = _events(server, actor="user:r@holder.test", outcome="denied")
    assert [(e.action, e.rule) for e in denied] == [("download", "grant-excludes-action")]


def test_a_grant_holder_cannot_store_into_the_owners_study(server: RunningServer) -> None:
    holder = add_institution(server.archive.engine, "HOLDER")
    sender = server.token_for("s@holder.test", {holder: "sender,receiver,viewer"})
    (ds, *_rest) = _study(server)
    grant_study(server.archive.engine, ds.StudyInstanceUID, holder)
    added = factories.ct_slice(
        spec=factories.StudySpec(study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID)
    )
    client = DICOMwebClient(server.dicomweb_url, headers={"Authorization": f"Bearer {sender}"})
    with pytest.raises(Exception, match="409"):
        client.store_instances([added], study_instance_uid=ds.StudyInstanceUID)
    assert _count(server, ds.StudyInstanceUID) == 3
    denied = _events(server, actor="user:s@holder.test", outcome="denied")
    assert [(e.action, e.rule, e.study_uid) for e in denied] == [
        ("store", "uid-in-use", ds.StudyInstanceUID)
    ]


@pytest.mark.parametrize("level", ["instance", "series", "study"])
def test_the_owner_deletes_a_granted_study_at_every_level(
    server: RunningServer, level: str
) -> None:
    holder = add_institution(server.archive.engine, "HOLDER")
    viewer = server.token_for("v@holder.test", {holder: "viewer"})
    ds = factories.ct_slice()  # one instance: deleting it at any level removes the study
    _store(server, ds)
    grant_study(server.archive.engine, ds.StudyInstanceUID, holder)
    with server.http() as http:
        response = http.delete(server.dicomweb_url + _paths(ds)[level])
    assert response.status_code == 204, response.text
    assert server.archive.read_study_access(ds.StudyInstanceUID) is None
    with Session(server.archive.engine) as session:
        assert session.exec(select(StudyGrant)).all() == []
    allowed = _events(server, action="delete", outcome="allowed", study_uid=ds.StudyInstanceUID)
    assert len(allowed) == 1
    _store(server, ds)  # the same UIDs again: a new study, which the old grant does not open
    headers = {"Authorization": f"Bearer {viewer}"}
    metadata = httpx.get(
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/metadata", headers=headers
    )
    assert metadata.status_code == 404


def test_deleting_part_of_a_granted_study_keeps_the_grant(server: RunningServer) -> None:
    holder = add_institution(server.archive.engine, "HOLDER")
    instances = _study(server)
    grant_study(server.archive.engine, instances[0].StudyInstanceUID, holder)
    with server.http() as http:
        assert http.delete(server.dicomweb_url + _paths(instances[2])["series"]).status_code == 204
    assert _count(server, instances[0].StudyInstanceUID) == 2
    access = server.archive.read_study_access(instances[0].StudyInstanceUID)
    assert access is not None and [g[0] for g in access.grants] == [holder]
