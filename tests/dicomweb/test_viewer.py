"""Installing and serving the OHIF viewer, with a small stand-in for the npm package.

The stand-in tarball has the shape of @ohif/app's (package/dist/ with a root-built index.html
and webpack bundles); a fake `npm` script hands it out, so these tests need no network. The
real package is exercised by tests/e2e/test_viewer.py.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import httpx
import pytest

from dicomweb.viewer_install import (
    OHIF_VERSION,
    ViewerInstallError,
    install_viewer,
    viewer_base_path,
    viewer_root,
)
from ferry import cli
from tests.conftest import RunningServer

BUNDLE = "app.bundle.0123456789abcdef.js"
FONT = "a34f9d1faa5f3315.woff2"
INDEX = (
    '<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
    f'<script defer src="/{BUNDLE}"></script><link href="/app.bundle.css" rel="stylesheet">'
    '</head><body><div id="root"></div></body></html>'
)
FILES = {
    "package/package.json": b'{"name": "@ohif/app"}',
    "package/dist/index.html": INDEX.encode(),
    f"package/dist/{BUNDLE}": b'(()=>{__webpack_require__.p = "/";})();',
    "package/dist/app.bundle.css": f"@font-face{{src:url(/{FONT})}}".encode(),
    f"package/dist/{FONT}": b"wOF2",
    "package/dist/assets/favicon.ico": b"\x00\x00\x01\x00",
}


@pytest.fixture
def fake_npm(tmp_path: Path) -> Path:
    """An `npm` that answers `npm pack` with the stand-in tarball and logs each call."""
    tarball = tmp_path / "ohif-app.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{tmp_path / "npm.log"}"\n'
        'while [ "$1" != "--pack-destination" ]; do shift; done\n'
        f'cp "{tarball}" "$2/ohif-app-{OHIF_VERSION}.tgz"\n'
    )
    npm.chmod(0o755)
    return npm


def test_install_unpacks_dist_relocates_it_and_is_idempotent(
    tmp_path: Path, fake_npm: Path
) -> None:
    root = tmp_path / "viewer"
    done = install_viewer(root, "/viewer/", npm=str(fake_npm))
    assert done.fetched and done.folder == root / OHIF_VERSION
    assert "installed" in done.describe() and "/viewer/" in done.describe()
    index = (done.folder / "index.html").read_text()
    assert 'window.PUBLIC_URL="/viewer/"' in index
    assert f'src="/viewer/{BUNDLE}"' in index and 'src="/viewer/app-config.js"' in index
    assert b'__webpack_require__.p = "/viewer/"' in (done.folder / BUNDLE).read_bytes()
    assert f"url(/viewer/{FONT})" in (done.folder / "app.bundle.css").read_text()
    assert not (done.folder / "package.json").exists()  # only dist/ is taken
    again = install_viewer(root, "/viewer/", npm=str(fake_npm))
    assert not again.fetched and "already installed" in again.describe()
    assert len((tmp_path / "npm.log").read_text().splitlines()) == 1  # npm ran once
    moved = install_viewer(root, "/ferry/viewer/", npm=str(fake_npm))
    assert (
        moved.fetched and 'PUBLIC_URL="/ferry/viewer/"' in (moved.folder / "index.html").read_text()
    )
    assert [p.name for p in root.iterdir()] == [OHIF_VERSION]  # no staging left behind


def test_base_path_follows_the_public_url() -> None:
    assert viewer_base_path(None) == "/viewer/"
    assert viewer_base_path("https://pacs.example.org") == "/viewer/"
    assert viewer_base_path("https://pacs.example.org/ferry") == "/ferry/viewer/"


def test_without_npm_the_command_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("FERRY_DATA_DIR", str(tmp_path / "var"))
    assert cli.main(["viewer", "install"]) == 1
    message = capsys.readouterr().err
    assert "npm is not installed" in message and "apt-get install npm" in message


def test_the_command_installs_and_reports(
    tmp_path: Path,
    fake_npm: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", f"{fake_npm.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FERRY_DATA_DIR", str(tmp_path / "var"))
    assert cli.main(["viewer", "install"]) == 0
    assert f"OHIF {OHIF_VERSION} installed in" in capsys.readouterr().out
    assert cli.main(["viewer", "install"]) == 0
    assert "already installed" in capsys.readouterr().out


def test_a_failing_npm_is_reported(tmp_path: Path) -> None:
    npm = tmp_path / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error 404 Not Found - GET @ohif/app' >&2\nexit 1\n")
    npm.chmod(0o755)
    with pytest.raises(ViewerInstallError, match="404 Not Found"):
        install_viewer(tmp_path / "viewer", "/viewer/", npm=str(npm))
    assert not (tmp_path / "viewer" / OHIF_VERSION).exists()


@pytest.fixture
def installed(server: RunningServer, fake_npm: Path) -> RunningServer:
    root = viewer_root(server.settings.data_dir)
    install_viewer(root, viewer_base_path(server.settings.public_url), npm=str(fake_npm))
    return server


def test_files_are_served_with_caching_fit_for_their_names(installed: RunningServer) -> None:
    viewer = f"{installed.base_url}/viewer"
    index = httpx.get(f"{viewer}/")
    assert index.status_code == 200 and f'src="/viewer/{BUNDLE}"' in index.text
    assert index.headers["cache-control"] == "no-cache"
    bundle = httpx.get(f"{viewer}/{BUNDLE}")
    assert bundle.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in bundle.headers["content-type"]
    assert httpx.get(f"{viewer}/{FONT}").headers["cache-control"].endswith("immutable")
    assert httpx.get(f"{viewer}/app.bundle.css").headers["cache-control"] == "no-cache"
    etag = bundle.headers["etag"]
    assert httpx.get(f"{viewer}/{BUNDLE}", headers={"If-None-Match": etag}).status_code == 304
    redirect = httpx.get(viewer)
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/viewer/")


def test_page_routes_fall_back_to_index_html(installed: RunningServer) -> None:
    viewer = f"{installed.base_url}/viewer"
    page = httpx.get(f"{viewer}/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 200 and "window.PUBLIC_URL" in page.text
    assert page.headers["cache-control"] == "no-cache"
    assert httpx.get(f"{viewer}/missing.bundle.js").status_code == 404
    connection = http.client.HTTPConnection("127.0.0.1", installed.settings.http_port)
    connection.request("GET", "/viewer/..%2F..%2Findex.db", headers={"Accept": "*/*"})
    assert connection.getresponse().status == 404
    connection.close()


def _config(script: str) -> dict[str, object]:
    prefix = "window.config = "
    body = script[script.index(prefix) + len(prefix) :].strip().removesuffix(";")
    return dict(json.loads(body))


def test_app_config_points_ohif_at_this_ferry(installed: RunningServer) -> None:
    response = httpx.get(f"{installed.base_url}/viewer/app-config.js")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"].startswith("text/javascript")
    config = _config(response.text)
    assert config["routerBasename"] == "/viewer"
    (source,) = config["dataSources"]  # type: ignore[misc]
    settings = source["configuration"]
    for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
        assert settings[root] == installed.dicomweb_url
    assert settings["qidoSupportsIncludeField"] and settings["supportsFuzzyMatching"]
    assert settings["imageRendering"] == settings["thumbnailRendering"] == "wadors"
    assert settings["enableStudyLazyLoad"] and settings["bulkDataURI"]["enabled"]
    assert "Bearer" in response.text  # where the identity work plugs in a token


def test_hosted_config_has_absolute_urls_and_no_router_base(server: RunningServer) -> None:
    """Served even without the bundled viewer: it is for an OHIF hosted elsewhere."""
    config = _config(httpx.get(f"{server.base_url}/viewer-config/app-config.js").text)
    assert config["routerBasename"] is None
    (source,) = config["dataSources"]  # type: ignore[misc]
    assert source["configuration"]["wadoRoot"] == server.dicomweb_url


def test_a_missing_viewer_says_how_to_install_it(server: RunningServer) -> None:
    response = httpx.get(f"{server.base_url}/viewer/")
    assert response.status_code == 404
    assert "ferry viewer install" in response.json()["error"]


def test_a_relative_data_folder_installs_from_another_working_directory(
    tmp_path: Path,
    fake_npm: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`make run` on a fresh clone: FERRY_DATA_DIR is `var`, relative to where Ferry starts.

    npm runs in the staging folder, so the destination it is handed must be absolute."""
    start = tmp_path / "clone"
    start.mkdir()
    monkeypatch.chdir(start)
    monkeypatch.setenv("PATH", f"{fake_npm.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FERRY_DATA_DIR", "var")
    assert cli.main(["viewer", "install"]) == 0, capsys.readouterr().err
    assert (start / "var" / "viewer" / OHIF_VERSION / "index.html").is_file()
    (call,) = (tmp_path / "npm.log").read_text().splitlines()
    destination = Path(call.split("--pack-destination ")[1])
    assert destination.is_absolute()
    assert destination.parent == start / "var" / "viewer"


@pytest.fixture
def local_ohif_package(tmp_path: Path) -> Path:
    """A folder npm can pack without a network: the stand-in dist/ under a package.json."""
    folder = tmp_path / "ohif-package"
    for name, data in FILES.items():
        path = folder / name.removeprefix("package/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (folder / "package.json").write_text(
        json.dumps({"name": "@ohif/app", "version": OHIF_VERSION, "files": ["dist"]})
    )
    return folder


def test_real_npm_packs_a_local_package_into_a_relative_data_folder(
    tmp_path: Path, local_ohif_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    monkeypatch.setenv("npm_config_update_notifier", "false")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_offline", "true")
    start = tmp_path / "clone"
    start.mkdir()
    monkeypatch.chdir(start)
    done = install_viewer(Path("var/viewer"), "/viewer/", npm=npm, package=str(local_ohif_package))
    assert done.fetched
    assert done.folder == start / "var" / "viewer" / OHIF_VERSION
    assert 'window.PUBLIC_URL="/viewer/"' in (done.folder / "index.html").read_text()
