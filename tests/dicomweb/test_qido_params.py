"""QIDO-RS query parameters and response shapes as a client sees them (PS3.18 8.3.4, 10.6, F.2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from tests import factories
from tests.conftest import RunningServer, run_server
from tests.dicomweb.test_data_coverage import DICOM, split_multipart, store, values

JSON = {"Accept": "application/dicom+json"}


def stored_studies(server) -> dict[str, list[Dataset]]:
    """A: Doe^John, two series (numbers 1, 2) of two; B: Johnson^Mary; C: Roe^Richard, sparse."""
    a = factories.StudySpec(
        patient_name="Doe^John", patient_id="P-A", study_date="20240115", accession_number="A-1"
    )
    b = factories.StudySpec(
        patient_name="Johnson^Mary", patient_id="P-B", study_date="20231231", series_number=3
    )
    c = factories.StudySpec(
        patient_name="Roe^Richard",
        patient_id="P-C",
        study_date="20240201",
        study_time="080000",
        accession_number="",
        referring_physician_name="",
    )
    corpus = {
        "A": factories.study(n_series=2, per_series=2, spec=a),
        "B": [factories.ct_slice(spec=b)],
        "C": [factories.ct_slice(spec=c)],
    }
    store(server, *(ds for instances in corpus.values() for ds in instances))
    return corpus


def qido(server, path: str, **params: str) -> httpx.Response:
    response = httpx.get(server.dicomweb_url + path, params=params, headers=JSON | server.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    return response


def found_names(corpus: dict[str, list[Dataset]], results: list[dict[str, Any]]) -> list[str]:
    names = {instances[0].StudyInstanceUID: name for name, instances in corpus.items()}
    return [names[values(result, "0020000D")[0]] for result in results]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"00100020": "P-B"}, {"B"}),
        ({"0020000D": "{A}"}, {"A"}),
        ({"StudyInstanceUID": "{A},{C}"}, {"A", "C"}),
        ({"StudyInstanceUID": "{A}\\{B}"}, {"A", "B"}),
        ({"SeriesNumber": "2"}, {"A"}),
        ({"SeriesNumber": "3,2"}, {"A", "B"}),
        ({"InstanceNumber": "2"}, {"A"}),
        ({"00200013": "1"}, {"A", "B", "C"}),
        ({"StudyDate": "20240115-"}, {"A", "C"}),
        ({"StudyDate": "-20240115"}, {"A", "B"}),
        ({"StudyDate": "20240116-20240131"}, set()),
        ({"PatientName": "john", "fuzzymatching": "true"}, {"A", "B"}),
        ({"PatientName": "joh", "fuzzymatching": "true"}, {"A", "B"}),
        ({"PatientName": "mary", "fuzzymatching": "true"}, {"B"}),
        ({"PatientName": "doe", "fuzzymatching": "true"}, {"A"}),
        ({"PatientName": "ohn", "fuzzymatching": "true"}, set()),
        ({"PatientName": "john", "fuzzymatching": "false"}, set()),
        ({"PatientName": "john"}, set()),
    ],
)
def test_search_for_studies_keys(server, query, expected) -> None:
    corpus = stored_studies(server)
    uids = {name: instances[0].StudyInstanceUID for name, instances in corpus.items()}
    params = {key: value.format(**uids) for key, value in query.items()}
    found = found_names(corpus, qido(server, "/studies", **params).json())
    assert sorted(found) == sorted(expected)


def test_percent_encoded_values_match_like_their_characters(server) -> None:
    corpus = stored_studies(server)
    for query in ("PatientName=DOE%2A", "PatientName=DOE*", "PatientName=d%6Fe%5Ej%4Fhn"):
        response = httpx.get(
            f"{server.dicomweb_url}/studies?{query}", headers=JSON | server.headers
        )
        assert query.encode() in response.request.url.raw_path  # sent as written
        assert found_names(corpus, response.json()) == ["A"], query


def test_series_and_instance_numbers_match_as_integers(server) -> None:
    corpus = stored_studies(server)
    a = corpus["A"]
    study = f"/studies/{a[0].StudyInstanceUID}"
    (series,) = qido(server, study + "/series", SeriesNumber="2").json()
    assert series["00200011"] == {"vr": "IS", "Value": [2]}
    assert type(values(series, "00200011")[0]) is int  # a JSON number, not "2" or 2.0
    assert values(series, "0020000E") == [a[2].SeriesInstanceUID]
    assert qido(server, study + "/series", SeriesNumber="02").json() == [series]

    instances = f"{study}/series/{a[0].SeriesInstanceUID}/instances"
    (instance,) = qido(server, instances, InstanceNumber="2").json()
    assert instance["00200013"] == {"vr": "IS", "Value": [2]}
    assert type(values(instance, "00200013")[0]) is int
    assert values(instance, "00080018") == [a[1].SOPInstanceUID]
    everywhere = qido(server, "/instances", InstanceNumber="1,2").json()
    assert len(everywhere) == 6


def test_includefield_by_keyword_tag_and_all(server) -> None:
    corpus = stored_studies(server)
    a = corpus["A"][0]
    uid = {"StudyInstanceUID": a.StudyInstanceUID}

    def study(**params: str) -> dict[str, Any]:
        (result,) = qido(server, "/studies", **uid, **params).json()
        return result

    plain = study()
    assert "00080070" not in plain and "00180015" not in plain and "00080062" not in plain
    assert values(study(includefield="Manufacturer"), "00080070") == ["Ferry"]
    assert values(study(includefield="00180015"), "00180015") == ["CHEST"]
    both = study(includefield="Manufacturer,00180015")
    assert (values(both, "00080070"), values(both, "00180015")) == (["Ferry"], ["CHEST"])
    assert values(study(includefield="all"), "00080062") == [a.SOPClassUID]

    (series,) = qido(server, "/series", **uid, SeriesNumber="1", includefield="KVP").json()
    assert values(series, "00180060") == [120.0]

    path = f"/studies/{a.StudyInstanceUID}/series/{a.SeriesInstanceUID}/instances"

    def instance(**params: str) -> dict[str, Any]:
        (result,) = qido(server, path, InstanceNumber="1", **params).json()
        return result

    assert "00180060" not in instance()
    assert values(instance(includefield="00180060"), "00180060") == [120.0]
    everything = instance(includefield="all")
    assert values(everything, "00200032") == [-22.4, -22.4, 2.5]  # ImagePositionPatient
    assert "7FE00010" not in everything


def test_limit_and_offset_page_through_studies(server) -> None:
    stored_studies(server)
    first = qido(server, "/studies", limit="2")
    assert len(first.json()) == 2
    assert first.headers["warning"].startswith("299 ")
    assert "Additional results can be requested" in first.headers["warning"]

    rest = qido(server, "/studies", offset="2")
    assert len(rest.json()) == 1
    assert "warning" not in rest.headers
    page = qido(server, "/studies", limit="2", offset="2")
    assert page.json() == rest.json()
    assert "warning" not in page.headers
    uids = [values(s, "0020000D")[0] for s in first.json() + rest.json()]
    assert len(set(uids)) == 3


@pytest.fixture
def server_returning_at_most_two(settings, archive) -> Iterator[RunningServer]:
    yield from run_server(replace(settings, qido_max_limit=2), archive)


def test_limit_above_the_server_maximum_is_clamped_with_a_warning(
    server_returning_at_most_two,
) -> None:
    server = server_returning_at_most_two
    stored_studies(server)
    clamped = qido(server, "/studies", limit="5")
    assert len(clamped.json()) == 2
    assert clamped.headers["warning"].startswith("299 ")
    assert "reduced to the maximum 2" in clamped.headers["warning"]
    assert "Additional results" in clamped.headers["warning"]


def test_unknown_parameter_is_ignored_with_a_warning(server) -> None:
    stored_studies(server)
    response = qido(server, "/studies", FerryNoSuchKey="1", PatientID="P-B")
    assert len(response.json()) == 1
    assert response.headers["warning"].startswith("299 ")
    assert "FerryNoSuchKey" in response.headers["warning"]


def test_no_match_is_200_with_an_empty_array(server) -> None:
    stored_studies(server)
    for path in ("/studies", "/series", "/instances"):
        response = qido(server, path, PatientID="NOBODY")
        assert response.content == b"[]"


def test_study_response_shapes_follow_the_json_model(server) -> None:
    corpus = stored_studies(server)
    (c,) = qido(server, "/studies", PatientID="P-C").json()
    assert c["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Roe^Richard"}]}
    assert c["00080020"] == {"vr": "DA", "Value": ["20240201"]}
    assert c["00080030"] == {"vr": "TM", "Value": ["080000"]}
    assert c["00201206"] == {"vr": "IS", "Value": [1]}
    assert c["00201208"] == {"vr": "IS", "Value": [1]}
    assert type(values(c, "00201208")[0]) is int
    assert c["00080050"] == {"vr": "SH"}  # empty AccessionNumber: no "Value"
    assert c["00080090"] == {"vr": "PN"}  # empty ReferringPhysicianName
    assert c["0020000D"] == {"vr": "UI", "Value": [corpus["C"][0].StudyInstanceUID]}
    for element in c.values():
        assert set(element) <= {"vr", "Value"} and element.get("Value", [None]) != []
    (a,) = qido(server, "/studies", PatientID="P-A").json()
    assert a["00201208"] == {"vr": "IS", "Value": [4]}
    assert a["00201206"] == {"vr": "IS", "Value": [2]}


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/studies?PatientID=P-A", 4),
        ("/studies/{study}/series?SeriesNumber=1", 2),
        ("/studies/{study}/series/{series}/instances?InstanceNumber=1", 1),
    ],
    ids=["study", "series", "instance"],
)
def test_retrieve_url_is_absolute_and_resolves(server, path, parts) -> None:
    a = stored_studies(server)["A"][0]
    url = server.dicomweb_url + path.format(study=a.StudyInstanceUID, series=a.SeriesInstanceUID)
    (result,) = httpx.get(url, headers=JSON | server.headers).json()
    (retrieve_url,) = values(result, "00081190")
    assert retrieve_url.startswith(server.dicomweb_url + "/studies/" + a.StudyInstanceUID)
    response = httpx.get(retrieve_url, headers={"Accept": DICOM, **server.headers})
    assert len(split_multipart(response)) == parts


def test_patient_attributes_match_what_each_study_returns(server) -> None:
    """Two institutions' patients, or one renamed patient, under one PatientID and no issuer."""
    first = factories.StudySpec(patient_id="SHARED", patient_name="Doe^Jane")
    second = replace(
        first.new_study(), patient_name="Smith^Anna", patient_sex="F", patient_birth_date="19800101"
    )
    store(server, factories.ct_slice(spec=first))
    store(server, factories.ct_slice(spec=second))
    shown = {
        values(s, "0020000D")[0]: values(s, "00100010")[0]["Alphabetic"]
        for s in qido(server, "/studies", PatientID="SHARED").json()
    }
    assert shown == {first.study_uid: "Doe^Jane", second.study_uid: "Smith^Anna"}
    for key, value, expected in [
        ("PatientName", "Doe*", first.study_uid),
        ("PatientName", "Smith*", second.study_uid),
        ("PatientSex", "F", second.study_uid),
        ("PatientBirthDate", "19800101", second.study_uid),
    ]:
        found = qido(server, "/studies", **{key: value}).json()
        assert [values(s, "0020000D")[0] for s in found] == [expected], f"{key}={value}"
