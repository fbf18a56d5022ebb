"""The fixed benchmark workload: which studies each phase stores, generated from one seed."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from _instances import SeriesSpec, StudySpec, derive_uid

SERIES_PER_STUDY = 3
LARGE_ROWS = 512
SMALL_ROWS = 16
SURNAMES = (
    "DOE", "DOERR", "SMITH", "JONES", "MÜLLER", "GARCÍA",
    "NGUYEN", "SATO", "ROSSI", "DUBOIS", "KOWALSKI", "OKAFOR",
)  # fmt: skip
GIVEN_NAMES = ("JOHN", "JANE", "ALEX", "MARIA", "WEI", "AMIR", "ANNA", "LUCA")
DESCRIPTIONS = ("CT CHEST", "CT ABDOMEN PELVIS", "MR BRAIN", "PET-CT WHOLE BODY", "CHEST X-RAY")
FILL_MODALITIES = ("CT", "CT", "MR", "PT", "CR")
FIRST_DATE = datetime.date(2015, 1, 1)
DATE_SPAN_DAYS = 3652  # ten years of studies
BENCH_DATE = "20250102"  # outside every QIDO date range, so bench studies never match one


@dataclass(frozen=True)
class Workload:
    seed: int
    series_size: int
    ingest_single: tuple[StudySpec, ...]
    ingest_concurrent: tuple[StudySpec, ...]
    retrieve: StudySpec
    fill: tuple[StudySpec, ...]

    @property
    def study_size(self) -> int:
        return SERIES_PER_STUDY * self.series_size


def plan_workload(
    seed: int,
    salt: str,
    instances: int,
    series_size: int,
    fill_instances: int,
    concurrent_instances: int | None = None,
) -> Workload:
    """Everything the run stores; `salt` keeps its UIDs apart from those of earlier runs.
    The concurrent ingest set has `concurrent_instances` (default: `instances`)."""
    fill_studies = max(2, math.ceil(fill_instances / (SERIES_PER_STUDY * series_size)))
    return Workload(
        seed=seed,
        series_size=series_size,
        ingest_single=_plan_large(salt, "ingest-1", instances, series_size),
        ingest_concurrent=_plan_large(
            salt, "ingest-n", concurrent_instances or instances, series_size
        ),
        retrieve=_plan_large(salt, "retrieve", SERIES_PER_STUDY * series_size, series_size)[0],
        fill=tuple(_iter_fill(salt, seed, fill_studies, series_size)),
    )


def whole_rounds(instances: int, batch_size: int, clients: int) -> int:
    """`instances` rounded up so that every client sends as many batches as the others: with a
    remainder, the last requests would run with clients idle, and the rate of N clients would
    be measured partly with fewer."""
    per_round = batch_size * clients
    return math.ceil(instances / per_round) * per_round


def fill_counts(workload: Workload, sizes: Sequence[int], prior: int) -> list[int]:
    """How many fill studies bring the index to each size, counting `prior` stored instances."""
    per_study = workload.study_size
    return [max(2, math.ceil(max(0, size - prior) / per_study)) for size in sizes]


def _plan_large(salt: str, label: str, count: int, series_size: int) -> tuple[StudySpec, ...]:
    """Studies of 512×512 CT, `SERIES_PER_STUDY` series of `series_size`; the last may be short."""
    studies = []
    for study_index in range(math.ceil(count / (SERIES_PER_STUDY * series_size))):
        study_uid = derive_uid(salt, label, "study", study_index)
        series = []
        for number in range(1, SERIES_PER_STUDY + 1):
            first = (study_index * SERIES_PER_STUDY + number - 1) * series_size
            size = min(series_size, count - first)
            if size <= 0:
                break
            uids = tuple(derive_uid(salt, label, "instance", first + i) for i in range(size))
            series_uid = derive_uid(salt, label, "series", study_index, number)
            series.append(SeriesSpec(series_uid, number, "CT", uids))
        studies.append(
            StudySpec(
                study_uid=study_uid,
                patient_id=f"BENCH-{label.upper()}",
                patient_name=f"BENCH^{label.upper()}",
                study_date=BENCH_DATE,
                accession_number=f"B{study_index:04d}{label[:8].upper()}",
                description=f"BENCH {label.upper()}",
                rows=LARGE_ROWS,
                series=tuple(series),
            )
        )
    return tuple(studies)


def _iter_fill(salt: str, seed: int, count: int, series_size: int) -> Iterator[StudySpec]:
    """Small-image studies for QIDO-RS; each patient has one to three, so prefixes are stable."""
    rng = np.random.default_rng(seed)
    patient, studies_left = -1, 0
    name = ""
    for index in range(count):
        if studies_left == 0:
            patient += 1
            studies_left = int(rng.integers(1, 4))
            name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN_NAMES)}"
            if patient == 0:  # the QIDO-RS target: a wildcard query never finds nothing
                name = f"{SURNAMES[0]}^{GIVEN_NAMES[0]}"
        studies_left -= 1
        date = FIRST_DATE + datetime.timedelta(days=int(rng.integers(0, DATE_SPAN_DAYS)))
        modalities = rng.choice(FILL_MODALITIES, size=SERIES_PER_STUDY)
        yield StudySpec(
            study_uid=derive_uid(salt, "fill-study", index),
            patient_id=f"PAT{patient:06d}",
            patient_name=name,
            study_date=date.strftime("%Y%m%d"),
            accession_number=f"ACC{index:07d}",
            description=str(rng.choice(DESCRIPTIONS)),
            rows=SMALL_ROWS,
            series=tuple(
                SeriesSpec(
                    series_uid=derive_uid(salt, "fill-series", index, number),
                    number=number,
                    modality=str(modality),
                    sop_uids=tuple(
                        derive_uid(salt, "fill-instance", index, number, i)
                        for i in range(series_size)
                    ),
                )
                for number, modality in enumerate(modalities, start=1)
            ),
        )
