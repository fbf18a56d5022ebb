"""`/metrics` scraped from a real uvicorn after real STOW-RS, C-STORE and QIDO-RS traffic."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from audit import AuditRecord, Outcome, record
from dimse.forward import FORWARD_STUDY
from dimse.server import Bridge
from ferry.app import build_archive
from ferry.metrics_routes import MetricsListener, collectors
from foundation import metrics
from foundation.errors import AuditUnavailable
from foundation.jobs import JobQueue
from tests.conftest import RunningServer, free_port, make_settings, run_server
from tests.dimse.conftest import dcmtk, run_dcmtk
from tests.factories import StudySpec, part10_bytes, study, write_series
from tests.policy._people import add_institution

TOKEN = "scrape-me-0123456789abcdef"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Observed:
    web: RunningServer
    bridge: Bridge

    def scrape(self, token: str = TOKEN) -> Samples:
        answer = httpx.get(f"{self.web.base_url}/metrics", headers=_bearer(token), timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain; version=")
        return parse(answer.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def observed(tmp_path: Path, database_url: str) -> Iterator[Observed]:
    settings = make_settings(tmp_path, database_url, dicom_port=free_port(), metrics_token=TOKEN)
    archive = build_archive(settings)
    try:
        for web in run_server(settings, archive):
            bridge = Bridge(settings.dimse(), archive)
            bridge.start()
            try:
                from tests.dimse.conftest import Dimse

                Dimse(web, bridge, clock=None).add_node("MODALITY")  # type: ignore[arg-type]
                yield Observed(web, bridge)
            finally:
                bridge.stop()
    finally:
        archive.engine.dispose()


@pytest.mark.dcmtk
def test_stow_c_store_and_qido_traffic_moves_the_counters(observed: Observed, tmp_path: Path):
    dcmtk("storescu")
    web = observed.web
    before = observed.scrape()
    stowed = study(1, 3, spec=StudySpec(patient_id="METRICS-STOW"))
    DICOMwebClient(web.dicomweb_url, headers=web.headers).store_instances(stowed)
    stowed_bytes = sum(len(part10_bytes(ds)) for ds in stowed)
    files = write_series(tmp_path / "modality", 2, spec=StudySpec(patient_id="METRICS-DIMSE"))
    sent = run_dcmtk("storescu", "-aet", "MODALITY", "-aec", web.settings.dicom_ae_title,
                     "127.0.0.1", str(observed.bridge.port), *map(str, files))  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    with web.http() as http:
        found = http.get(f"{web.dicomweb_url}/studies", params={"PatientID": "METRICS-STOW"})
        assert len(found.json()) == 1
        assert http.get(f"{web.base_url}/no-such-page").status_code == 404

    after = observed.scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("ferry_store_instances_total", service="stow-rs", outcome="stored") == 3
    assert moved("ferry_store_bytes_total", service="stow-rs") == pytest.approx(
        stowed_bytes, rel=0.01
    )
    assert moved("ferry_store_instances_total", service="c-store", outcome="stored") == 2
    assert moved("ferry_store_bytes_total", service="c-store") == pytest.approx(
        sum(path.stat().st_size for path in files), rel=0.05
    )
    assert moved("ferry_qido_results_count", level="study") == 1
    assert moved("ferry_qido_results_sum", level="study") == 1
    stow = {"method": "POST", "route": "/dicom-web/studies", "status": "200"}
    assert moved("ferry_http_requests_total", **stow) == 1
    assert moved("ferry_http_requests_total", method="GET", route="unmatched", status="404") == 1
    timed = {"method": "POST", "route": "/dicom-web/studies"}
    assert moved("ferry_http_request_duration_seconds_count", **timed) == 1
    assert value(after, "ferry_disk_free_bytes") > 0

    # No patient data or UIDs in any label: route templates, not paths.
    labels = {v for (_, pairs) in after for _, v in pairs}
    assert not any("METRICS-" in label or stowed[0].StudyInstanceUID in label for label in labels)


def test_the_job_queue_is_read_at_scrape_time(observed: Observed):
    queue = JobQueue(observed.web.archive.engine)
    queue.add(FORWARD_STUDY, {"study_uid": "1.2.3", "node_pk": 1})
    queue.add(FORWARD_STUDY, {"study_uid": "1.2.4", "node_pk": 1})

    samples = observed.scrape()

    assert value(samples, "ferry_jobs", kind=FORWARD_STUDY, status="queued") == 2
    assert value(samples, "ferry_jobs_oldest_age_seconds", kind=FORWARD_STUDY, status="queued") >= 0


@pytest.mark.dcmtk
def test_forwarding_results_and_retention_deletions_are_counted(observed: Observed, tmp_path: Path):
    """A study forwarded to a PACS (delivered) and to a node nobody answers (retry), then
    deleted by the retention sweeper: each outcome moves its counter."""
    from datetime import UTC, datetime, timedelta

    from dimse.forward import enqueue_forward, forward_handler
    from foundation.jobs import Worker
    from retention.config import RetentionConfig
    from retention.sweeper import Sweeper
    from tests.dimse.test_forward import storescp
    from tests.factories import create_node

    web, engine = observed.web, observed.web.archive.engine
    stowed = study(1, 2, spec=StudySpec(patient_id="METRICS-FORWARD"))
    DICOMwebClient(web.dicomweb_url, headers=web.headers).store_instances(stowed)
    study_uid = str(stowed[0].StudyInstanceUID)
    before = observed.scrape()
    port, closed = free_port(), free_port()
    with storescp(tmp_path / "pacs", port):
        for ae_title, node_port in (("PACS1", port), ("GONE", closed)):
            node = create_node(engine, web.institution_pk, ae_title, "127.0.0.1", node_port,
                               can_write=True)  # fmt: skip
            with engine.begin() as connection:
                enqueue_forward(connection, study_uid=study_uid, node_pk=node.pk or 0,
                                now=datetime.now(UTC), requested_by="metrics")  # fmt: skip
        context = observed.bridge.context
        worker = Worker(context.jobs, {FORWARD_STUDY: forward_handler(context)})
        assert worker.run_until_idle() == 2
    later = datetime.now(UTC) + timedelta(days=400)
    swept = Sweeper(web.archive, RetentionConfig(pause_seconds=0), lambda: later).run()
    assert study_uid in swept.studies_deleted
    after = observed.scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("ferry_forward_results_total", result="delivered") == 1
    assert moved("ferry_forward_results_total", result="retry") == 1
    assert moved("ferry_retention_deletions_total", kind="study") == len(swept.studies_deleted)


def test_audit_write_failures_are_counted(observed: Observed, tmp_path: Path):
    before = value(observed.scrape(), "ferry_audit_write_failures_total", action="download")
    unwritable = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'audit.db'}")
    with pytest.raises(AuditUnavailable):
        record(unwritable, AuditRecord(action="download", outcome=Outcome.ALLOWED))
    after = value(observed.scrape(), "ferry_audit_write_failures_total", action="download")
    assert after - before == 1


def test_counts_of_other_processes_are_merged(observed: Observed):
    """A DIMSE bridge process (or another worker) writes its own file; a scrape sees it."""
    before = value(
        observed.scrape(), "ferry_store_instances_total", service="c-store", outcome="stored"
    )
    folder = metrics.folder()
    assert folder is not None
    script = (
        "from pathlib import Path; from foundation import metrics; "
        f"metrics.configure(Path({str(folder)!r})); metrics.record_store('c-store', 5, 0, 500)"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=environment, timeout=120)

    after = value(
        observed.scrape(), "ferry_store_instances_total", service="c-store", outcome="stored"
    )
    assert after - before == 5


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no token
        {"Authorization": "Bearer not-the-metrics-token-at-all"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
def test_metrics_without_the_token_are_refused(observed: Observed, headers: dict[str, str]):
    answer = httpx.get(f"{observed.web.base_url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "ferry_" not in answer.text


def test_a_users_access_token_is_not_the_metrics_token(observed: Observed):
    institution = add_institution(observed.web.archive.engine, "OTHER")
    admin = observed.web.token_for("admin@other.test", {institution: "admin"})
    for token in (observed.web.token, admin):
        answer = httpx.get(f"{observed.web.base_url}/metrics", headers=_bearer(token), timeout=30)
        assert answer.status_code == 401
    assert observed.scrape()  # the service still answers the right token


def test_without_a_token_setting_metrics_are_not_served(server: RunningServer):
    for headers in ({}, server.headers, _bearer(TOKEN)):
        answer = httpx.get(f"{server.base_url}/metrics", headers=headers, timeout=30)
        assert answer.status_code == 404


def test_the_metrics_port_listens_on_loopback_only(server: RunningServer):
    port = free_port()
    listener = MetricsListener(port, collectors(server.settings, server.archive))
    listener.start()
    try:
        assert listener._server.server_address[0] == "127.0.0.1"
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert answer.status_code == 200
        assert value(parse(answer.text), "ferry_disk_free_bytes") > 0
    finally:
        listener.stop()


def test_serve_empties_the_metrics_folder_at_start(tmp_path: Path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left by a process of an earlier run")
    current = metrics.folder()
    try:
        metrics.configure(folder, clean=True)
        assert not (folder / "counter_999999.db").exists()
    finally:
        if current is not None:
            metrics.configure(current)


def test_the_dashboard_and_the_docs_name_only_metrics_ferry_has():
    import json
    import re

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "docs" / "grafana-ferry.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    scraped = {"ferry_jobs", "ferry_jobs_oldest_age_seconds", "ferry_disk_free_bytes"}
    scraped |= {"ferry_disk_reserve_bytes", "ferry_atna_backlog_events"}
    known = {metric._name for metric in metrics.ALL} | scraped
    suffixes = re.compile(r"_(total|bucket|count|sum)$")
    for text in [*expressions, (root / "docs" / "metrics.md").read_text()]:
        for name in re.findall(r"\bferry_[a-z_]+", text):
            assert suffixes.sub("", name) in known or name in known, name
    documented = (root / "docs" / "metrics.md").read_text()
    assert all(f"`{name}" in documented for name in known)


def test_the_metric_files_stay_off_the_data_disk(tmp_path: Path):
    from ferry.settings import Settings

    chosen = Settings(data_dir=tmp_path / "var").metrics_folder()
    assert not chosen.resolve().is_relative_to((tmp_path / "var").resolve())
    assert Settings(data_dir=tmp_path / "other").metrics_folder() != chosen
    assert Settings(metrics_dir=tmp_path / "m").metrics_folder() == tmp_path / "m"


def test_serve_stopped_by_sigterm_cleans_up_its_metric_files(tmp_path: Path):
    import signal

    from tests._peers import wait_until, wait_until_http_answers

    port, folder = free_port(), tmp_path / "metric-files"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FERRY_")},
        "PYTHONPATH": os.pathsep.join(sys.path),
        "FERRY_DATA_DIR": str(tmp_path / "var"),
        "FERRY_HTTP_PORT": str(port),
        "FERRY_DICOM_PORT": "0",
        "FERRY_METRICS_DIR": str(folder),
    }
    command = [sys.executable, "-m", "ferry.cli", "serve"]
    serve = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    try:
        wait_until_http_answers(f"http://127.0.0.1:{port}/healthz", serve)
        # The health check is counted once its answer has gone, so the count may trail it.
        wait_until(lambda: any(folder.glob("*.db")), "the health check's count", serve)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert not folder.exists()
