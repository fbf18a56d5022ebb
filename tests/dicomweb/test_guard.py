"""Enforcement: every route guarded, every refusal audited, institutions kept apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from sqlmodel import Session, select
from starlette.routing import Mount, Route

from archive.models import Study, StudyGrant
from audit.search import AuditQuery, search_events
from dicomweb.capabilities import capability_of
from dicomweb.guard import GUARD_ATTRIBUTE
from policy import store
from tests import factories
from tests.conftest import RunningServer
from tests.policy._people import add_institution

# Routes that authenticate and decide on their own (sign-in, keys, the admin API) or serve
# files that hold no patient data (the viewer's code). Anything else must carry a guard.
OWN_AUTHENTICATION = ("/auth/", "/.well-known/", "/api", "/viewer", "/metrics")


def _walk(routes: list, prefix: str = "") -> list[tuple[str, object]]:
    found = []
    for route in routes:
        if isinstance(route, Mount):
            found += _walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            found.append((prefix + route.path, route.endpoint))
    return found


def test_every_route_is_guarded_or_explicitly_public(server: RunningServer) -> None:
    unguarded = [
        path
        for path, endpoint in _walk(server.app.routes)
        if not hasattr(endpoint, GUARD_ATTRIBUTE) and not path.startswith(OWN_AUTHENTICATION)
    ]
    assert unguarded == []
    dicomweb = [e for p, e in _walk(server.app.routes) if p.startswith("/dicom-web/")]
    assert len(dicomweb) > 20
    public = [
        (p, capability_of(e))  # type: ignore[arg-type]
        for p, e in _walk(server.app.routes)
        if getattr(e, GUARD_ATTRIBUTE, 0) is None
    ]
    # Besides health and the portal's front door (front page, sign-in with a password or a
    # provider, registering), only
    # capabilities (OPTIONS on a resource) are public: no patient data.
    describing = [
        p for p, capability in public if capability and capability.service == "Capabilities"
    ]
    front_door = [
        "/", "/auth/login", "/healthz", "/readyz", "/register", "/sign-in",
        "/sign-in/oidc/{provider}", "/sign-in/oidc/{provider}/callback",
    ]  # fmt: skip
    assert sorted({p for p, _ in public if p not in describing}) == front_door
    assert {"/dicom-web", "/dicom-web/", "/dicom-web/studies/{study}"} <= set(describing)


def _store(server: RunningServer, token: str, **spec: str) -> Dataset:
    ds = factories.ct_slice(spec=factories.StudySpec(**spec))
    client = DICOMwebClient(server.dicomweb_url, headers={"Authorization": f"Bearer {token}"})
    client.store_instances([ds])
    return ds


def _paths(ds: Dataset) -> list[str]:
    study = f"/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    instance = f"{series}/instances/{ds.SOPInstanceUID}"
    return [
        study,
        f"{study}/metadata",
        f"{study}/rendered",
        f"{study}/thumbnail",
        series,
        f"{series}/metadata",
        f"{series}/rendered",
        instance,
        f"{instance}/metadata",
        f"{instance}/frames/1",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
        f"{instance}/bulk/7FE00010",
    ]


def _searches_within(ds: Dataset) -> list[str]:
    study = f"/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    return [f"{study}/series", f"{study}/instances", f"{series}/instances"]


def _wado_uri(ds: Dataset) -> str:
    return (
        f"/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}"
        f"&seriesUID={ds.SeriesInstanceUID}&objectUID={ds.SOPInstanceUID}"
    )


def _denied_events(server: RunningServer, **criteria: str) -> list:
    query = AuditQuery(outcome="denied", **criteria)
    return list(search_events(server.archive.engine, query, limit=500).entries)


def test_without_credentials_every_resource_answers_401_and_is_audited(server) -> None:
    ds = _store(server, server.token)
    for path in ["/studies", "/series", "/instances", *_paths(ds), *_searches_within(ds)]:
        response = httpx.get(server.dicomweb_url + path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(server.base_url + _wado_uri(ds)).status_code == 401
    stow = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=b"--b--",
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=b"},
    )
    assert stow.status_code == 401
    assert httpx.delete(f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}").status_code == 401
    refused = [e for e in _denied_events(server) if e.rule == "authentication"]
    assert len(refused) >= 20


def test_a_forged_token_is_refused(server) -> None:
    header, payload, _signature = server.token.split(".")
    forged = f"{header}.{payload}.c2lnbmF0dXJl"
    response = httpx.get(
        f"{server.dicomweb_url}/studies", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401


def test_two_institutions_with_the_same_patient_id_see_only_their_own(server) -> None:
    other = add_institution(server.archive.engine, "OTHER")
    mine = _store(server, server.token, patient_id="P-SAME", patient_name="Ours^Patient")
    their_token = server.token_for("b@other.test", {other: "admin,sender,receiver,viewer"})
    theirs = _store(server, their_token, patient_id="P-SAME", patient_name="Theirs^Patient")
    for token, own, foreign in ((server.token, mine, theirs), (their_token, theirs, mine)):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(headers=headers, timeout=30) as http:
            for level in ("/studies", "/series", "/instances"):
                found = http.get(f"{server.dicomweb_url}{level}?PatientID=P-SAME").json()
                assert [r["0020000D"]["Value"][0] for r in found] == [own.StudyInstanceUID]
            for path in _paths(foreign):
                response = http.get(server.dicomweb_url + path)
                assert response.status_code == 404, path
                unknown = path.replace(foreign.StudyInstanceUID, "1.2.3.999")
                assert response.json() == http.get(server.dicomweb_url + unknown).json() | {
                    "error": response.json()["error"]
                }
            for search in _searches_within(foreign):
                assert http.get(server.dicomweb_url + search).json() == [], search
            assert http.get(server.base_url + _wado_uri(foreign)).status_code == 404
            assert http.get(server.base_url + _wado_uri(own)).status_code == 200
            gone = http.delete(f"{server.dicomweb_url}/studies/{foreign.StudyInstanceUID}")
            assert gone.status_code == 404
    denied = _denied_events(server, study_uid=theirs.StudyInstanceUID)
    assert denied and all(e.rule == "default-deny" for e in denied)
    assert {e.patient_id for e in denied} == {"P-SAME"}
    both = server.token_for("both@ferry.test", {server.institution_pk: "viewer", other: "viewer"})
    found = httpx.get(
        f"{server.dicomweb_url}/studies?PatientID=P-SAME",
        headers={"Authorization": f"Bearer {both}"},
    ).json()
    assert len(found) == 2


def _grant(server: RunningServer, study_uid: str, institution_pk: int, **values) -> int:
    with Session(server.archive.engine) as session:
        study = session.exec(select(Study).where(Study.study_instance_uid == study_uid)).one()
        grant = StudyGrant(study_pk=study.pk, institution_pk=institution_pk, **values)
        session.add(grant)
        session.commit()
        return grant.pk


def _visible(server: RunningServer, token: str, study_uid: str) -> bool:
    headers = {"Authorization": f"Bearer {token}"}
    found = httpx.get(
        f"{server.dicomweb_url}/studies?StudyInstanceUID={study_uid}", headers=headers
    ).json()
    metadata = httpx.get(f"{server.dicomweb_url}/studies/{study_uid}/metadata", headers=headers)
    assert bool(found) == (metadata.status_code == 200)
    return bool(found)


def test_grants_open_a_study_until_they_expire_or_are_revoked(server) -> None:
    other = add_institution(server.archive.engine, "GRANTEE")
    token = server.token_for("g@grantee.test", {other: "viewer"})
    ds = _store(server, server.token)
    study = ds.StudyInstanceUID
    assert not _visible(server, token, study)
    now = datetime.now(UTC)
    _grant(server, study, other, expires_at=now - timedelta(hours=1))
    assert not _visible(server, token, study)
    pk = _grant(server, study, other, expires_at=now + timedelta(hours=1))
    assert _visible(server, token, study)
    with Session(server.archive.engine) as session:
        grant = session.get(StudyGrant, pk)
        grant.revoked_at = now - timedelta(seconds=1)
        session.add(grant)
        session.commit()
    assert not _visible(server, token, study)


@pytest.mark.parametrize(
    ("roles", "method", "status"),
    [
        ("requester", "GET", 404),
        ("viewer", "GET", 404),  # viewing is not downloading
        ("viewer", "DELETE", 404),
        ("receiver", "GET", 200),
        ("auditor", "GET", 404),
    ],
)
def test_roles_limit_what_a_member_may_do(server, roles, method, status) -> None:
    ds = _store(server, server.token)
    token = server.token_for(f"{roles}-{method}@ferry.test", {server.institution_pk: roles})
    response = httpx.request(
        method,
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == status


def test_a_viewer_cannot_store_and_the_refusal_is_audited(server) -> None:
    token = server.token_for("viewer@ferry.test", {server.institution_pk: "viewer"})
    ds = factories.ct_slice()
    body = (
        b"--b\r\nContent-Type: application/dicom\r\n\r\n"
        + factories.part10_bytes(ds)
        + b"\r\n--b--\r\n"
    )
    response = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/related; type=application/dicom; boundary=b",
        },
    )
    assert response.status_code == 403
    assert [e.action for e in _denied_events(server, actor="user:viewer@ferry.test")] == ["store"]
    assert server.archive.read_study_access(ds.StudyInstanceUID) is None


def test_allowed_downloads_are_audited_with_patient_and_accession(server) -> None:
    ds = _store(server, server.token, patient_id="AUD-1", accession_number="ACC-AUD")
    with server.http() as http:
        assert http.get(f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}").status_code == 200
    events = search_events(
        server.archive.engine, AuditQuery(study_uid=ds.StudyInstanceUID, action="download")
    ).entries
    assert [(e.outcome, e.patient_id, e.accession_number) for e in events] == [
        ("allowed", "AUD-1", "ACC-AUD")
    ]


def test_repeated_views_fold_into_one_event_but_downloads_do_not(server) -> None:
    ds = _store(server, server.token)
    instance = (
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    with server.http() as http:
        for _ in range(5):
            assert http.get(f"{instance}/frames/1").status_code == 200
            assert http.get(instance).status_code == 200

    def events(action: str) -> list:
        query = AuditQuery(study_uid=ds.StudyInstanceUID, action=action)
        return list(search_events(server.archive.engine, query).entries)

    assert len(events("read-pixels")) == 1
    assert len(events("download")) == 5


def test_an_api_token_deletes_only_with_the_delete_scope(server) -> None:
    """An admin-role client's token: without `delete` it may read, not delete; with it, it may
    delete its own institution's studies and still not another's."""
    engine = server.archive.engine
    own = _store(server, server.token)
    other_institution = add_institution(engine, "ELSEWHERE")
    outsider = server.token_for("outsider@ferry.test", {other_institution: "sender"})
    foreign = _store(server, outsider, patient_id="FOREIGN")
    client = store.create_api_client(engine, "cleanup tool", server.institution_pk, "admin")
    reader = store.issue_api_token(engine, client.pk, "read").token
    deleter = store.issue_api_token(engine, client.pk, "read,delete").token

    def delete(token: str, ds: Dataset) -> int:
        url = f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}"
        return httpx.delete(url, headers={"Authorization": f"Bearer {token}"}).status_code

    def exists(ds: Dataset) -> bool:
        with Session(engine) as session:
            query = select(Study).where(Study.study_instance_uid == ds.StudyInstanceUID)
            return session.exec(query).first() is not None

    assert delete(reader, own) == 404  # refused, as for a study it could not see
    assert exists(own)
    assert delete(deleter, foreign) == 404
    assert exists(foreign)
    assert delete(deleter, own) == 204
    assert not exists(own)


# -- WADO-URI: a download is decided on what is sent, after content negotiation ----------------

# (contentType or None, what the object is): every one of these sends the Part 10 file.
WADO_URI_DOWNLOADS = [
    ("application/dicom", "ct"),
    ("image/jpeg;q=0.5,application/dicom", "ct"),
    (" application/dicom", "ct"),
    ("Application/DICOM", "ct"),
    (None, "sr"),  # no rendering of a report: the file is the answer
]


def _wado_uri_download(server: RunningServer, token: str, content_type: str | None, kind: str):
    ds = factories.basic_text_sr() if kind == "sr" else factories.ct_slice()
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([ds])
    params = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
    }
    if content_type is not None:
        params["contentType"] = content_type
    response = httpx.get(
        f"{server.base_url}/wado",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return ds, response


@pytest.mark.parametrize(("content_type", "kind"), WADO_URI_DOWNLOADS)
@pytest.mark.parametrize(("roles", "status"), [("viewer", 404), ("receiver", 200)])
def test_wado_uri_sends_a_dicom_file_only_with_the_download_right(
    server, content_type, kind, roles, status
) -> None:
    token = server.token_for(f"{roles}@ferry.test", {server.institution_pk: roles})
    ds, response = _wado_uri_download(server, token, content_type, kind)
    assert response.status_code == status, response.text
    query = AuditQuery(study_uid=ds.StudyInstanceUID, action="download")
    (event,) = search_events(server.archive.engine, query).entries
    assert event.actor == f"user:{roles}@ferry.test"
    if status == 200:
        assert response.headers["content-type"] == "application/dicom"
        assert response.content[128:132] == b"DICM"
        assert event.outcome == "allowed"
    else:
        unknown = httpx.get(
            f"{server.base_url}/wado?requestType=WADO&studyUID=1.2.3.999&seriesUID=1.2.3"
            "&objectUID=1.2.3",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.json() | {"error": ""} == unknown.json() | {"error": ""}
        assert (event.outcome, event.rule) == ("denied", "default-deny")


def test_wado_uri_renders_for_a_viewer_and_that_is_no_download(server) -> None:
    token = server.token_for("viewer@ferry.test", {server.institution_pk: "viewer"})
    ds, response = _wado_uri_download(server, token, "image/jpeg", "ct")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    query = AuditQuery(study_uid=ds.StudyInstanceUID, action="download")
    assert not search_events(server.archive.engine, query).entries


def test_wado_uri_anonymize_is_a_download_decided_as_one(server) -> None:
    """De-identified or not, the Part 10 file needs the download right: a viewer of the
    institution and another institution's receiver get 404, exactly like a missing object."""
    ds = factories.ct_slice()
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([ds])
    other = add_institution(server.archive.engine, "ELSEWHERE")
    tokens = {
        "viewer": server.token_for("viewer@ferry.test", {server.institution_pk: "viewer"}),
        "stranger": server.token_for("s@elsewhere.test", {other: "receiver,viewer"}),
        "receiver": server.token_for("receiver@ferry.test", {server.institution_pk: "receiver"}),
    }
    query = {"requestType": "WADO", "contentType": "application/dicom", "anonymize": "yes",
             "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,
             "objectUID": ds.SOPInstanceUID}  # fmt: skip
    answers = {
        who: httpx.get(
            f"{server.base_url}/wado",
            params=query,
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        )
        for who, token in tokens.items()
    }
    unknown = httpx.get(
        f"{server.base_url}/wado", params=query | {"studyUID": "1.2.3.999"}, timeout=30,
        headers={"Authorization": f"Bearer {tokens['stranger']}"},
    )  # fmt: skip
    for who in ("viewer", "stranger"):
        assert answers[who].status_code == 404, who
        assert answers[who].json() | {"error": ""} == unknown.json() | {"error": ""}
    assert answers["receiver"].status_code == 200
    assert ds.PatientID.encode() not in answers["receiver"].content
    audit = AuditQuery(study_uid=ds.StudyInstanceUID, action="download")
    events = search_events(server.archive.engine, audit).entries
    assert sorted(e.outcome for e in events) == ["allowed", "denied", "denied"]
