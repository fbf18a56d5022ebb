"""QIDO-RS (PS3.18 10.6) latency for a fixed mix of queries, every answer counted and checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from _http import UnexpectedAnswer, first_value, read_json_array, timed_get
from _instances import StudySpec
from _report import Figure, latency_figures
from _servers import Server

PATIENT_ID = "00100020"
ACCESSION_NUMBER = "00080050"
SOP_INSTANCE_UID = "00080018"
NAME_PREFIX = "DOE"
DATE_RANGE = ("20180101", "20191231")
MODALITY = "MR"
LIST_LIMIT = 101
OHIF_INCLUDE = "00081030,00080060"  # StudyDescription, Modality: what OHIF's study list asks


@dataclass(frozen=True)
class Query:
    """A QIDO-RS request; `path` is relative to the DICOMweb root and its query string literal,
    since Orthanc does not decode percent-encoded values (`DOE%2A` matches nothing)."""

    key: str
    label: str
    path: str
    expected: int
    exact: bool  # False: at least `expected`, for a server that held other studies already
    match: tuple[str, str] | None = None  # (tag, value) that every result must carry


def plan_queries(
    catalogue: Sequence[StudySpec], targets: tuple[StudySpec, StudySpec], exact: bool
) -> list[Query]:
    """The query mix over the studies a server holds, aimed at two of them (`targets`)."""
    first, second = targets
    series = first.series[0]
    sop_uid = series.sop_uids[len(series.sop_uids) // 2]
    low, high = DATE_RANGE
    return [
        Query(
            "patient_id",
            "studies by PatientID",
            f"studies?PatientID={first.patient_id}",
            sum(s.patient_id == first.patient_id for s in catalogue),
            exact,
            (PATIENT_ID, first.patient_id),
        ),
        Query(
            "patient_name",
            f"studies by PatientName={NAME_PREFIX}*",
            f"studies?PatientName={NAME_PREFIX}*",
            sum(s.patient_name.startswith(NAME_PREFIX) for s in catalogue),
            exact,
        ),
        Query(
            "study_date",
            "studies by StudyDate range",
            f"studies?StudyDate={low}-{high}",
            sum(low <= s.study_date <= high for s in catalogue),
            exact,
        ),
        Query(
            "accession",
            "studies by AccessionNumber",
            f"studies?AccessionNumber={second.accession_number}",
            1,
            exact,
            (ACCESSION_NUMBER, second.accession_number),
        ),
        Query(
            "modalities",
            f"studies by ModalitiesInStudy={MODALITY}",
            f"studies?ModalitiesInStudy={MODALITY}",
            sum(MODALITY in s.modalities for s in catalogue),
            exact,
        ),
        Query(
            "study_list",
            f"study list, limit={LIST_LIMIT}, includefield (OHIF)",
            f"studies?includefield={OHIF_INCLUDE}&limit={LIST_LIMIT}&offset=0",
            min(LIST_LIMIT, len(catalogue)),
            exact or len(catalogue) >= LIST_LIMIT,
        ),
        Query(
            "study_series",
            "series of a study",
            f"studies/{first.study_uid}/series",
            len(first.series),
            True,
        ),
        Query(
            "series_instances",
            f"instances of a series ({len(series.sop_uids)})",
            f"studies/{first.study_uid}/series/{series.series_uid}/instances",
            len(series.sop_uids),
            True,
        ),
        Query(
            "sop_instance",
            "instances by SOPInstanceUID",
            f"instances?SOPInstanceUID={sop_uid}",
            1,
            True,
            (SOP_INSTANCE_UID, sop_uid),
        ),
    ]


def measure_search_latency(
    server: Server,
    queries: Sequence[Query],
    size: int,
    index_instances: int,
    repeat: int,
    warmup: int,
) -> list[Figure]:
    """p50/p95 per query; rounds go through the whole mix so no query runs only on a warm cache."""
    samples = sample_search_latency([server], queries, repeat, warmup)[server.name]
    return search_figures(f"qido.{size}", size, queries, samples, index_instances)


def sample_search_latency(
    servers: Sequence[Server], queries: Sequence[Query], repeat: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per request, by server name and query key, every answer checked.

    With several servers (the same server as several principals), each query is sent by each in
    turn, the first alternating from round to round, so none is always the one on a cold cache.
    """
    samples: dict[str, dict[str, list[float]]] = {
        server.name: {query.key: [] for query in queries} for server in servers
    }
    clients = [server.client() for server in servers]
    try:
        for query in queries:
            for _ in range(warmup):
                for server, client in zip(servers, clients, strict=True):
                    _search(client, server, query)
        for round_number in range(repeat):
            turn = list(zip(servers, clients, strict=True))
            if round_number % 2:
                turn.reverse()
            for query in queries:
                for server, client in turn:
                    samples[server.name][query.key].append(_search(client, server, query))
    finally:
        for client in clients:
            client.close()
    return samples


def search_figures(
    group: str,
    size: int,
    queries: Sequence[Query],
    samples: dict[str, list[float]],
    index_instances: int,
) -> list[Figure]:
    """p50 and p95 rows of each query of the mix, from one server's samples."""
    return [
        figure
        for query in queries
        for figure in latency_figures(
            group,
            f"{group}.{query.key}",
            f"QIDO-RS {short_count(size)}: {query.label}",
            samples[query.key],
            path=query.path,
            results=query.expected,
            index_instances=index_instances,
        )
    ]


def short_count(count: int) -> str:
    """10000 → '10k', 1500 → '1.5k', 999 → '999'."""
    return f"{count / 1000:g}k" if count >= 1000 else str(count)


def _search(client: httpx.Client, server: Server, query: Query) -> float:
    seconds, response = timed_get(client, f"{server.base_url}/{query.path}")
    results = read_json_array(response)
    count_ok = len(results) == query.expected if query.exact else len(results) >= query.expected
    if not count_ok:
        wanted = "" if query.exact else "at least "
        raise UnexpectedAnswer(
            f"{query.path}: {len(results)} results, expected {wanted}{query.expected}"
        )
    if query.match:
        tag, value = query.match
        wrong = [
            first_value(result, tag) for result in results if first_value(result, tag) != value
        ]
        if wrong:
            raise UnexpectedAnswer(f"{query.path}: results with {tag} {wrong[:3]}")
    return seconds
