"""Store, search, retrieve and read metadata through dicomweb-client against a real server."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydicom.dataset import Dataset

from tests import factories


def _stored_study(client, **spec_fields) -> list[Dataset]:  # type: ignore[no-untyped-def]
    spec = factories.StudySpec(**spec_fields)
    instances = factories.study(n_series=2, per_series=3, spec=spec)
    client.store_instances(instances)
    return instances


def test_store_then_search_studies_shows_the_study(client) -> None:
    instances = _stored_study(client, patient_name="Doe^Jane", patient_id="P-1")
    studies = client.search_for_studies()
    assert len(studies) == 1
    found = Dataset.from_json(studies[0])
    assert found.StudyInstanceUID == instances[0].StudyInstanceUID
    assert str(found.PatientName) == "Doe^Jane"
    assert found.NumberOfStudyRelatedSeries == 2
    assert found.NumberOfStudyRelatedInstances == 6
    assert found.ModalitiesInStudy == "CT"
    assert found.RetrieveURL.endswith(f"/studies/{instances[0].StudyInstanceUID}")


def test_retrieve_study_returns_the_stored_bytes(client) -> None:
    instances = _stored_study(client)
    retrieved = client.retrieve_study(instances[0].StudyInstanceUID)
    assert sorted(r.SOPInstanceUID for r in retrieved) == sorted(
        i.SOPInstanceUID for i in instances
    )
    first = next(r for r in retrieved if r.SOPInstanceUID == instances[0].SOPInstanceUID)
    assert (first.pixel_array == instances[0].pixel_array).all()


def test_series_metadata_has_bulk_data_uri_for_pixels(client, server) -> None:
    instances = _stored_study(client)
    ds = instances[0]
    metadata = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert len(metadata) == 3
    pixel = metadata[0]["7FE00010"]
    assert pixel["BulkDataURI"].startswith(server.dicomweb_url + "/studies/")
    assert metadata[0]["00100010"]["Value"][0]["Alphabetic"] == "Ferry^Test"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"PatientName": "doe*"}, {"A"}),
        ({"PatientName": "DOE^J?NE"}, {"A"}),
        ({"PatientID": "P-2"}, {"B"}),
        ({"StudyDate": "20240101-20240131"}, {"A"}),
        ({"StudyDate": "-20231231"}, {"B"}),
        ({"StudyDate": "20240201-"}, set()),
        ({"AccessionNumber": "ACC-B"}, {"B"}),
        ({"ModalitiesInStudy": "CT"}, {"A", "B"}),
        ({"ModalitiesInStudy": "MR"}, set()),
        ({"StudyTime": "1000-1100"}, {"A"}),
        ({"PatientName": ""}, {"A", "B"}),
    ],
)
def test_search_for_studies_matching(client, query, expected) -> None:
    a = _stored_study(
        client,
        patient_name="Doe^Jane",
        patient_id="P-1",
        study_date="20240115",
        study_time="101500",
        accession_number="ACC-A",
    )
    b = _stored_study(
        client,
        patient_name="Roe^Richard",
        patient_id="P-2",
        study_date="20230310",
        study_time="141500",
        accession_number="ACC-B",
    )
    names = {a[0].StudyInstanceUID: "A", b[0].StudyInstanceUID: "B"}
    found = client.search_for_studies(search_filters=query)
    assert {names[Dataset.from_json(s).StudyInstanceUID] for s in found} == expected


def test_search_series_and_instances_levels(client) -> None:
    instances = _stored_study(client)
    study_uid = instances[0].StudyInstanceUID
    series = client.search_for_series(study_uid)
    assert len(series) == 2
    assert {Dataset.from_json(s).NumberOfSeriesRelatedInstances for s in series} == {3}
    series_uid = instances[0].SeriesInstanceUID
    found = client.search_for_instances(study_uid, series_uid)
    assert len(found) == 3
    one = client.search_for_instances(
        search_filters={"SOPInstanceUID": instances[1].SOPInstanceUID}
    )
    assert [Dataset.from_json(x).SOPInstanceUID for x in one] == [instances[1].SOPInstanceUID]
    assert Dataset.from_json(one[0]).Rows == 64


def test_identical_resend_is_success_and_changed_content_is_refused(client) -> None:
    ds = factories.ct_slice()
    client.store_instances([ds])
    client.store_instances([ds])  # identical: still success
    changed = replace_value(ds, "StudyDescription", "changed")
    from requests import HTTPError

    with pytest.raises(HTTPError) as refused:
        client.store_instances([changed])
    assert refused.value.response.status_code == 409
    body = refused.value.response.json()
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]


def replace_value(ds: Dataset, keyword: str, value: str) -> Dataset:
    copy = Dataset(ds)
    copy.file_meta = ds.file_meta
    setattr(copy, keyword, value)
    return copy


def test_delete_study_removes_it(client, server) -> None:
    instances = _stored_study(client)
    study_uid = instances[0].StudyInstanceUID
    client.delete_study(study_uid)
    assert client.search_for_studies() == []
    assert list(server.archive.blobs.iter_keys()) == []


_ = replace
