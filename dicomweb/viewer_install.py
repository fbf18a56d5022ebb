"""Installing the prebuilt OHIF viewer from the npm registry into Ferry's data folder.

`npm pack @ohif/app@<version>` fetches the published tarball (npm checks its integrity against
the registry); its `package/dist/` is the built viewer. That build expects to live at the root
of its origin ("/app.bundle.js", webpack's public path "/"), so it is relocated once, at install
time, to the path Ferry serves it under: index.html's links and `window.PUBLIC_URL`, the CSS
`url(/...)` references and each bundle's webpack public path are rewritten. The marker file
records the version and the base path the copy was relocated to.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
VIEWER_PATH = "/viewer"
MARKER = ".ferry-viewer.json"
NPM_MISSING = (
    "npm is not installed, and the viewer is fetched with it once. Install it "
    "(Debian: `sudo apt-get install npm`), then run `ferry viewer install` again. "
    "Everything else in Ferry works without it."
)

_DIST = "package/dist/"
_PUBLIC_URL = 'window.PUBLIC_URL="/"'
_WEBPACK_PUBLIC_PATH = b'__webpack_require__.p = "/";'


class ViewerInstallError(Exception):
    """The viewer could not be installed; the message says why and what to do."""


@dataclass(frozen=True)
class ViewerInstall:
    folder: Path
    base_path: str
    fetched: bool

    def describe(self) -> str:
        if not self.fetched:
            return f"OHIF {OHIF_VERSION} is already installed in {self.folder}"
        return f"OHIF {OHIF_VERSION} installed in {self.folder}, served at {self.base_path}"


def viewer_root(data_dir: Path) -> Path:
    """The folder holding one subfolder per installed OHIF version."""
    return data_dir / "viewer"


def viewer_base_path(public_url: str | None) -> str:
    """Where browsers find the viewer: under the public URL's path, if it has one."""
    prefix = urlsplit(public_url).path.rstrip("/") if public_url else ""
    return f"{prefix}{VIEWER_PATH}/"


def installed_viewer(root: Path, base_path: str) -> Path | None:
    """The installed copy for this version and base path, if there is one."""
    folder = root / OHIF_VERSION
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("version") != OHIF_VERSION or marker.get("base_path") != base_path:
        return None
    return folder


def install_viewer(
    root: Path,
    base_path: str,
    npm: str | None = None,
    progress: Callable[[str], None] = lambda _message: None,
    package: str = f"{OHIF_PACKAGE}@{OHIF_VERSION}",
) -> ViewerInstall:
    """Fetch, unpack and relocate OHIF into root/<version>; nothing to do if already there.

    `package` is what `npm pack` is given: the pinned release, or a local folder or tarball
    of it (an offline install). `root` may be relative (the default data folder is `var`).
    """
    root = root.resolve()  # npm runs in another folder: a relative path would mean another place
    folder = root / OHIF_VERSION
    if installed_viewer(root, base_path) is not None:
        return ViewerInstall(folder, base_path, fetched=False)
    npm = npm or shutil.which("npm")
    if npm is None:
        raise ViewerInstallError(NPM_MISSING)
    root.mkdir(parents=True, exist_ok=True)
    progress(f"fetching {package} (about 50 MB) with {npm} ...")
    # Staged next to the target, so that the final step is a rename on one filesystem.
    with tempfile.TemporaryDirectory(dir=root, prefix=".install-") as work:
        staged = Path(work) / "dist"
        unpack_dist(fetch_package(npm, Path(work), package), staged)
        relocate(staged, base_path)
        marker = {"package": OHIF_PACKAGE, "version": OHIF_VERSION, "base_path": base_path}
        (staged / MARKER).write_text(json.dumps(marker))
        if folder.exists():
            folder.rename(Path(work) / "previous")
        staged.rename(folder)
    return ViewerInstall(folder, base_path, fetched=True)


def fetch_package(npm: str, into: Path, package: str) -> Path:
    """`npm pack` the package into `into`; it uses the user's npm registry settings.

    npm runs inside `into` and reads `--pack-destination` relative to there, so it is given
    an absolute path (a relative one would be doubled: var/viewer/.install-x/var/viewer/...).
    """
    into = into.resolve()
    command = [npm, "pack", package, "--pack-destination", str(into)]
    try:
        result = subprocess.run(command, cwd=into, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ViewerInstallError(f"`{' '.join(command[:3])}` did not run: {error}") from None
    tarballs = list(into.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ViewerInstallError(
            f"`npm pack {package}` failed (is the npm registry "
            f"reachable?): {' / '.join(detail) or f'exit status {result.returncode}'}"
        )
    return tarballs[0]


def unpack_dist(tarball: Path, into: Path) -> None:
    """Extract the package's dist/ folder only, refusing links and paths that leave it."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = []
            for member in archive.getmembers():
                if member.name.startswith(_DIST) and member.name != _DIST:
                    member.name = member.name.removeprefix(_DIST)
                    members.append(member)
            if not any(member.name == "index.html" for member in members):
                raise ViewerInstallError(f"{tarball.name} has no {_DIST}index.html")
            archive.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise ViewerInstallError(f"cannot unpack {tarball.name}: {error}") from None


def relocate(dist: Path, base_path: str) -> None:
    """Point a root-built OHIF dist at `base_path` (e.g. "/viewer/")."""
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    if _PUBLIC_URL not in html:
        raise ViewerInstallError(f"unexpected OHIF build: index.html lacks {_PUBLIC_URL}")
    html = html.replace(_PUBLIC_URL, f'window.PUBLIC_URL="{base_path}"')
    html = html.replace(' href="/', f' href="{base_path}').replace(' src="/', f' src="{base_path}')
    index.write_text(html, encoding="utf-8")
    relocated = 0
    for script in dist.glob("*.js"):
        code = script.read_bytes()
        if _WEBPACK_PUBLIC_PATH in code:
            new_path = f'__webpack_require__.p = "{base_path}";'.encode()
            script.write_bytes(code.replace(_WEBPACK_PUBLIC_PATH, new_path))
            relocated += 1
    if not relocated:
        raise ViewerInstallError("unexpected OHIF build: no bundle sets webpack's public path")
    for sheet in dist.glob("*.css"):
        css = sheet.read_bytes()
        sheet.write_bytes(css.replace(b"url(/", b"url(" + base_path.encode()))
