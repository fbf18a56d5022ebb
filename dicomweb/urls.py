"""The public base URL clients see, for RetrieveURL and BulkDataURI (PS3.18 8.5)."""

from __future__ import annotations

from pydicom.uid import UID
from starlette.requests import Request

from dicomweb.config import DicomwebConfig
from foundation.errors import InvalidQuery

DICOMWEB_PREFIX = "/dicom-web"


def public_base(request: Request, config: DicomwebConfig) -> str:
    """Configured URL first; forwarded headers only from a proxy we were told to trust."""
    if config.public_url:
        return config.public_url + DICOMWEB_PREFIX
    headers = request.headers
    scheme = request.url.scheme
    host = headers.get("host") or f"{config.http_host}:{config.http_port}"
    prefix = ""
    if config.trusted_proxy:
        scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = headers.get("x-forwarded-host", host).split(",")[0].strip()
        prefix = headers.get("x-forwarded-prefix", "").rstrip("/")
    return f"{scheme}://{host}{prefix}{DICOMWEB_PREFIX}"


def path_uid(request: Request, name: str) -> str:
    """A UID from the path, refused before it reaches a query or a file name."""
    value = request.path_params[name]
    if not UID(value).is_valid:
        raise InvalidQuery(f"{name.replace('_', ' ')} {value[:80]!r} is not a valid UID")
    return str(value)
