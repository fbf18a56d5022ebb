"""The bundled OHIF viewer in a real Chromium: the study list, a CT series, a multi-frame
instance, a JPEG 2000 instance and an encapsulated PDF, all read from Ferry over DICOMweb.

A viewer of the institution signs in first (`POST /auth/login`, as the portal's sign-in page
does); the browser then sends the session cookie with OHIF's same-origin DICOMweb requests.

Needs npm (once, to fetch OHIF into .cache/ohif), Debian's /usr/bin/chromium and Playwright
for Python (`pip install playwright`; its own browser download is not used). Without them the
test skips, unless FERRY_TEST_REQUIRE names `browser`. On failure a screenshot is saved in the
test's tmp_path and its path printed, with the DICOMweb requests that failed.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset

from archive.store import Archive
from dicomweb.viewer_install import (
    ViewerInstallError,
    install_viewer,
    installed_viewer,
    viewer_base_path,
)
from ferry.settings import Settings
from tests import factories
from tests.conftest import RunningServer, run_server, skip_unless_available
from tests.policy._people import PASSWORD, add_user

pytestmark = pytest.mark.slow

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "ohif"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# OHIF's once-per-session disclaimer and first-visit tour would cover the viewport.
QUIET_OHIF = """
sessionStorage.setItem('investigationalUseDialog', 'hidden');
localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
"""
# What the first drawn viewport canvas shows: how many pixels are lit, how many distinct
# levels there are, and a digest to tell two images apart.
SAMPLE_CANVAS = """
() => {
  const canvas = [...document.querySelectorAll('canvas.cornerstone-canvas')]
    .find(c => c.width > 0 && c.height > 0);
  if (!canvas) return null;
  const copy = document.createElement('canvas');
  copy.width = canvas.width;
  copy.height = canvas.height;
  const context = copy.getContext('2d');
  context.drawImage(canvas, 0, 0);
  const data = context.getImageData(0, 0, copy.width, copy.height).data;
  const levels = new Set();
  let lit = 0, digest = 0;
  for (let i = 0; i < data.length; i += 4) {
    const value = data[i] + data[i + 1] + data[i + 2];
    if (value > 30) lit++;
    levels.add(value);
    digest = (digest * 31 + value) >>> 0;
  }
  return {lit, levels: levels.size, digest};
}
"""
IMAGE_DRAWN = f"() => {{ const s = ({SAMPLE_CANVAS})(); return s && s.lit > 500 && s.levels > 1; }}"
IMAGE_CHANGED = f"(before) => {{ const s = ({SAMPLE_CANVAS})(); return s && s.digest !== before; }}"
PDF_SHOWN = """
async () => {
  const element = document.querySelector(
    'object[type="application/pdf"], embed[type="application/pdf"], iframe[src]');
  const url = element && (element.data || element.src);
  if (!url) return false;
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  return String.fromCharCode(...bytes.slice(0, 5)) === '%PDF-';
}
"""
SIGN_IN = """
async ([email, password]) => {
  const response = await fetch('/auth/login', {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({email, password}),
  });
  return response.status;
}
"""
TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def ohif() -> Path:
    """OHIF installed once into the repository's .cache, shared by every session after."""
    if not CHROMIUM.exists():
        skip_unless_available("browser", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_unless_available("browser", "Playwright is missing (pip install playwright)")
    base_path = viewer_base_path(None)
    if installed_viewer(CACHE, base_path) is None and shutil.which("npm") is None:
        skip_unless_available("browser", "npm is missing, and OHIF is not in .cache/ohif yet")
    try:
        install_viewer(CACHE, base_path)
    except ViewerInstallError as error:
        skip_unless_available("browser", f"OHIF could not be installed: {error}")
    return CACHE


@pytest.fixture(scope="module")
def chromium(ohif: Path, playwright_session: Any) -> Iterator[Any]:
    """From the process's one Playwright (tests/conftest.py `playwright_session`)."""
    launch = playwright_session.chromium.launch
    browser = launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """SQLite only: the viewer sees DICOMweb, and the PostgreSQL paths are tested elsewhere."""
    return sqlite_database_url


@pytest.fixture
def viewer_server(settings: Settings, archive: Archive, ohif: Path) -> Iterator[RunningServer]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "viewer").symlink_to(ohif, target_is_directory=True)
    yield from run_server(settings, archive)


class Session:
    """One browser page on the viewer, remembering what went wrong for the failure report."""

    def __init__(self, page: Any, base_url: str, folder: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.folder = folder
        self.failures: list[str] = []
        page.on("response", self._note)
        page.on("pageerror", lambda error: self.failures.append(f"page error: {error}"))

    def _note(self, response: Any) -> None:
        if response.status >= 400:
            self.failures.append(f"{response.status} {response.request.method} {response.url}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            shot = self.folder / f"{name}.png"
            self.page.screenshot(path=str(shot))
            print(f"screenshot of the failed step {name!r}: {shot}")
            report = "\n".join(dict.fromkeys(self.failures)) or "none"
            raise AssertionError(f"{name}: {error}\nfailed requests:\n{report}") from error

    def open_study(self, study_uid: str) -> None:
        self.page.goto(f"{self.base_url}/viewer/viewer?StudyInstanceUIDs={study_uid}")

    def sample(self) -> dict[str, int]:
        return dict(self.page.evaluate(SAMPLE_CANVAS))

    def wait_for_image(self) -> dict[str, int]:
        self.page.wait_for_function(IMAGE_DRAWN, timeout=TIMEOUT_MS)
        return self.sample()

    def scroll_and_wait_for_change(self, before: dict[str, int]) -> dict[str, int]:
        box = self.page.locator("canvas.cornerstone-canvas").first.bounding_box()
        assert box is not None
        self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        self.page.mouse.wheel(0, 120)
        self.page.wait_for_function(IMAGE_CHANGED, arg=before["digest"], timeout=TIMEOUT_MS)
        return self.wait_for_image()


def _ct_series(count: int) -> list[Dataset]:
    """CT slices that differ at a glance: grey, with a white block moving to the right."""
    spec = factories.StudySpec(patient_name="Scroll^Ferry", patient_id="FERRY-E2E-1")
    slices = []
    for number in range(1, count + 1):
        ds = factories.ct_slice(spec=replace(spec, instance_number=number))
        pixels = np.full((ds.Rows, ds.Columns), 1024, dtype=np.int16)  # 0 HU: mid grey
        pixels[8:40, 12 * number : 12 * number + 10] = 2024  # 1000 HU: white
        ds.PixelData = pixels.tobytes()
        slices.append(ds)
    return slices


def _multiframe(count: int) -> Dataset:
    """A multi-frame image whose frames differ in shape, not only in level: OHIF windows each
    frame by its own range, so frames that only differ by an offset would look the same."""
    spec = factories.StudySpec(patient_name="Frames^Ferry", patient_id="FERRY-E2E-2")
    ds = factories.mr_multiframe(frames=count, rows=64, columns=64, spec=spec)
    volume = np.full((count, ds.Rows, ds.Columns), 1000, dtype=np.uint16)
    for frame in range(count):
        volume[frame, 8:40, 12 * frame + 2 : 12 * frame + 12] = 4000
    ds.PixelData = volume.tobytes()
    return ds


def _store(server: RunningServer, datasets: list[Dataset]) -> str:
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances(datasets)
    return str(datasets[0].StudyInstanceUID)


def sign_in(session: Session, server: RunningServer) -> None:
    """A viewer of the studies' institution signs in; the session cookie stays in the browser."""
    email = "radiologist@ferry.test"
    add_user(server.archive.engine, email, memberships={server.institution_pk: "viewer"})
    session.page.goto(f"{server.base_url}/healthz")  # any page of Ferry's origin
    assert session.page.evaluate(SIGN_IN, [email, PASSWORD]) == 200
    cookies = {c["name"]: c for c in session.page.context.cookies(server.base_url)}
    assert cookies["ferry_session"]["httpOnly"]


def test_viewer_shows_the_study_list_images_and_a_pdf(
    viewer_server: RunningServer, chromium: Any, tmp_path: Path
) -> None:
    ct = _store(viewer_server, _ct_series(4))
    frames = _store(viewer_server, [_multiframe(5)])
    wavelet_spec = factories.StudySpec(patient_name="Wavelet^Ferry", patient_id="FERRY-E2E-3")
    wavelet = _store(viewer_server, [factories.jpeg2000(spec=wavelet_spec)])
    report_spec = factories.StudySpec(patient_name="Report^Ferry", patient_id="FERRY-E2E-4")
    report = _store(viewer_server, [factories.encapsulated_pdf(spec=report_spec)])

    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(QUIET_OHIF)
    session = Session(context.new_page(), viewer_server.base_url, tmp_path)
    page = session.page
    try:
        with session.step("sign-in"):
            sign_in(session, viewer_server)

        with session.step("study-list"):
            page.goto(f"{viewer_server.base_url}/viewer/")
            for name in ["Scroll, Ferry", "Frames, Ferry", "Wavelet, Ferry", "Report, Ferry"]:
                page.get_by_text(name, exact=True).wait_for(timeout=TIMEOUT_MS)

        with session.step("ct-series"):
            page.get_by_text("Scroll, Ferry", exact=True).click()
            page.get_by_role("button", name="Basic Viewer").click()
            page.wait_for_url(re.compile(f"StudyInstanceUIDs={re.escape(ct)}"))
            first = session.wait_for_image()
            second = session.scroll_and_wait_for_change(first)
            assert second["digest"] != first["digest"]

        with session.step("multi-frame"):
            session.open_study(frames)
            first = session.wait_for_image()
            session.scroll_and_wait_for_change(first)

        with session.step("jpeg-2000"):
            session.open_study(wavelet)
            session.wait_for_image()

        with session.step("pdf"):
            session.open_study(report)
            page.wait_for_function(PDF_SHOWN, timeout=TIMEOUT_MS)
    finally:
        context.close()
