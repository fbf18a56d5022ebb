"""A study retention deleted answers 404 everywhere, caches included; a stream cut short fails."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from audit.search import AuditQuery, iter_events
from retention.config import RetentionConfig
from retention.sweeper import Sweeper
from tests import factories
from tests.conftest import RunningServer
from tests.dicomweb.test_rendered import store


def _sweep_later(server: RunningServer, days: float = 16) -> list[str]:
    later = datetime.now(UTC) + timedelta(days=days)
    sweeper = Sweeper(server.archive, RetentionConfig(pause_seconds=0), lambda: later)
    return sweeper.run().studies_deleted


def test_a_deleted_study_answers_404_everywhere(server: RunningServer) -> None:
    spec = factories.StudySpec()
    first = factories.ct_slice(spec=spec)
    second = factories.ct_slice(spec=replace(spec, instance_number=2))
    store(server, first, second)
    study = f"{server.dicomweb_url}/studies/{first.StudyInstanceUID}"
    instance = f"{study}/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    wado_uri = {
        "requestType": "WADO",
        "studyUID": first.StudyInstanceUID,
        "seriesUID": first.SeriesInstanceUID,
        "objectUID": first.SOPInstanceUID,
    }
    reads = {
        "study": (study, "multipart/related; type=application/dicom"),
        "metadata": (f"{study}/metadata", "application/dicom+json"),
        "frames": (f"{instance}/frames/1", "multipart/related; type=application/octet-stream"),
        "thumbnail": (f"{study}/thumbnail", "image/jpeg"),
        "instance thumbnail": (f"{instance}/thumbnail", "image/jpeg"),
        "rendered": (f"{instance}/rendered", "image/jpeg"),
    }
    frames_cache = server.settings.data_dir / "cache" / "frames"
    with server.http() as http:
        for what, (url, accept) in reads.items():
            answer = http.get(url, headers={"Accept": accept})
            assert answer.status_code == 200, (what, answer.text)
        assert http.get(f"{server.base_url}/wado", params=wado_uri).status_code == 200
        assert list(frames_cache.rglob("*.json"))  # a frame layout was cached
        query = AuditQuery(study_uid=first.StudyInstanceUID)
        before = [event.pk for event in iter_events(server.archive.engine, query)]

        assert _sweep_later(server) == [first.StudyInstanceUID]
        after = list(iter_events(server.archive.engine, query))
        assert [event.pk for event in after][: len(before)] == before  # the record stays
        assert [event.action for event in after[len(before) :]] == ["delete"]

        for what, (url, accept) in reads.items():
            assert http.get(url, headers={"Accept": accept}).status_code == 404, what
        assert http.get(f"{server.base_url}/wado", params=wado_uri).status_code == 404
        found = http.get(
            f"{server.dicomweb_url}/studies",
            params={"StudyInstanceUID": first.StudyInstanceUID},
        )
        assert found.status_code == 200 and found.json() == []
    assert list(frames_cache.rglob("*.json")) == []  # derived from the blobs, gone with them
    assert list(server.archive.blobs.iter_keys()) == []


def test_a_study_deleted_while_it_streams_fails_cleanly(server: RunningServer) -> None:
    spec = factories.StudySpec()
    # 24 blobs of 2 MiB: the answer opens 4, then 8 at a time, each batch while the one before
    # is sent; what the sockets hold (a few MiB) leaves the last batch unopened at the sweep.
    big = [
        factories.ct_slice(1024, 1024, spec=replace(spec, instance_number=n)) for n in range(1, 25)
    ]
    store(server, *big)
    url = f"{server.dicomweb_url}/studies/{spec.study_uid}"
    with server.http() as http:
        with http.stream(
            "GET", url, headers={"Accept": "multipart/related; type=application/dicom"}
        ) as answer:
            assert answer.status_code == 200
            chunks = answer.iter_raw()
            received = len(next(chunks))
            assert _sweep_later(server) == [spec.study_uid]
            with pytest.raises(httpx.HTTPError):  # cut short, never a body that looks whole
                for chunk in chunks:
                    received += len(chunk)
        assert received < sum(len(factories.part10_bytes(ds)) for ds in big)
        assert http.get(url).status_code == 404  # nothing half-deleted remains
        assert http.get(f"{server.base_url}/healthz").status_code == 200
    assert list(server.archive.blobs.iter_keys()) == []
