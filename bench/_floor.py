"""The floor under every request: a no-op authenticated GET, timed like the QIDO-RS mix.

Ferry: `GET /auth/me` with the benchmark's API token (authentication and nothing else: no
query, no audit event). Orthanc has no authentication here: `GET /system`, its smallest JSON.
"""

from __future__ import annotations

import orjson

from _http import UnexpectedAnswer, timed_get
from _report import Figure, latency_figures
from _servers import Server

PATHS = {"ferry": "/auth/me", "orthanc": "/system"}


def measure_floor_latency(server: Server, repeat: int, warmup: int) -> list[Figure]:
    """p50/p95 of the no-op request; every answer must be 200 and a JSON object."""
    root = server.base_url.removesuffix("/dicom-web")
    path = PATHS.get(server.name, "/auth/me")
    seconds = []
    with server.client() as client:
        for attempt in range(warmup + repeat):
            elapsed, response = timed_get(client, f"{root}{path}", "application/json")
            if response.status_code != 200 or not isinstance(orjson.loads(response.content), dict):
                raise UnexpectedAnswer(f"{path}: HTTP {response.status_code}")
            if attempt >= warmup:
                seconds.append(elapsed)
    label = "no-op authenticated request (Ferry /auth/me; Orthanc /system)"
    return latency_figures("floor", "floor", label, seconds, path=path)
