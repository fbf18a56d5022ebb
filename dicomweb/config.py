"""DICOMweb configuration: the values the DICOMweb edge reads, built from Settings by the root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DicomwebConfig:
    """Where Ferry is reached, request limits and the folders for caches, spool and viewer.

    The composition root puts it in `app.state.dicomweb`; handlers read it from there.
    """

    data_dir: Path  # caches (cache/frames, cache/thumbnails) and the installed viewer
    spool_dir: Path  # incoming STOW-RS parts, on the blob store's filesystem
    public_url: str | None = None  # configured: it wins over request headers
    http_host: str = "127.0.0.1"
    http_port: int = 8042
    trusted_proxy: bool = False  # X-Forwarded-* headers are believed only then
    qido_max_limit: int = 1000
    max_request_bytes: int = 4 * 1024**3
