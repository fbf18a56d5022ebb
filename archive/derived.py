"""Where files derived from one stored instance live, so that they leave with it.

A cache of things made from an instance's bytes (rendered thumbnails, say) keeps each
instance's files in one folder named by its blob key, `<root>/<2 hex>/<64 hex>/`, under a root
the composition root names. `Archive.delete`, the one path for removal, removes those folders
with the blobs: a deleted study leaves no picture of the patient behind in a cache.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def derived_folder(root: Path, blob_key: str) -> Path:
    """The folder under `root` for the files derived from one blob (keys are never reused)."""
    name = hashlib.sha256(blob_key.encode()).hexdigest()
    return root / name[:2] / name


def forget_derived(root: Path, keys: Iterable[str]) -> None:
    for key in keys:
        folder = derived_folder(root, key)
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("files derived from %s not removed from %s: %s", key, root, error)
