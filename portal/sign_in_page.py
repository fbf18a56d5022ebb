"""Where the sign-in page sends people afterwards: `next`, a path on this site only.

The page itself is `portal.pages.front` (`GET /sign-in`, also at `/auth/login`): its form
posts to `POST /sign-in`, which sets the session cookies and answers 303 to `safe_next(next)`,
so the page cannot be used to send people elsewhere.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

DEFAULT_NEXT = "/"
# Printable ASCII without the backslash: browsers drop tabs and newlines inside a URL and read
# `\` as `/`, so `/\t/evil.example` or `/\evil.example` would leave the site.
_PATH_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F)) - {"\\"}


def safe_next(value: str | None) -> str:
    """A path on this site, as given, or `/`: never `//host`, a scheme, or odd characters.

    Decided on the server, on the value exactly as the browser would read it: one leading `/`
    and then no second one, nothing but printable ASCII, and no scheme or host once parsed.
    """
    if not value or not set(value) <= _PATH_CHARACTERS:
        return DEFAULT_NEXT
    if not value.startswith("/") or value.startswith("//"):
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return DEFAULT_NEXT
    return value


def script_string(value: str) -> str:
    """A JavaScript string literal safe inside <script>: no `</script>`, no HTML specials."""
    literal = json.dumps(value)
    return literal.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
