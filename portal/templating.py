"""Server-rendered pages: Jinja2 through Starlette's templating, and the filters pages share.

Templates live in `portal/templates/` (one folder per area: `front/`, `dashboard/`,
`transfers/`, `requests/`, `account/`, later `admin/`), static files in `portal/static/`
(`ferry.css` and the vendored htmx). Autoescaping is on for every template. Times are shown
in the institution's time zone with the zone named; DICOM dates as `6 Dec 2026`.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from starlette.templating import Jinja2Templates

from foundation.clock import as_utc

PACKAGE = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE / "templates"
STATIC_DIR = PACKAGE / "static"
STATIC_PATH = "/static"
HTMX_VERSION = "2.0.11"  # portal/static/vendor/htmx-<version>.min.js, its licence beside it
HTMX_SCRIPT = f"{STATIC_PATH}/vendor/htmx-{HTMX_VERSION}.min.js"


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(moment: datetime | None, timezone: str | None = "UTC") -> str:
    """`6 Dec 2026 14:05 CET`: unambiguous, in the institution's zone, the zone shown."""
    if moment is None:
        return ""
    aware = as_utc(moment)
    local = aware.astimezone(_zone(timezone))
    return f"{local.day} {local:%b %Y %H:%M} {local.tzname()}"


def machine_time(moment: datetime | None) -> str:
    """The same moment for `<time datetime>`: ISO 8601 with its offset."""
    if moment is None:
        return ""
    aware = as_utc(moment)
    return aware.isoformat(timespec="seconds")


def dicom_date(text: str | None) -> str:
    """A DICOM DA value (`20261206`) as `6 Dec 2026`; anything else as given."""
    value = (text or "").strip()
    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:8])) if len(value) == 8 else None
    except ValueError:
        day = None
    return f"{day.day} {day:%b %Y}" if day else value


def person_name(text: str | None) -> str:
    """A DICOM PN (`DOE^JANE`) as people write it: `DOE, JANE`."""
    parts = [part for part in (text or "").split("^") if part]
    if len(parts) < 2:
        return parts[0] if parts else ""
    return f"{parts[0]}, {' '.join(parts[1:])}"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        local_time=local_time,
        machine_time=machine_time,
        dicom_date=dicom_date,
        person_name=person_name,
    )
    environment.globals.update(htmx_script=HTMX_SCRIPT, static_path=STATIC_PATH)
    return environment


def build_templates() -> Jinja2Templates:
    return Jinja2Templates(env=_environment())
