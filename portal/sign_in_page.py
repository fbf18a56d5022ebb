"""`GET /auth/login`: the smallest sign-in page a person needs before opening the viewer.

The form posts to `POST /auth/login` (session and CSRF cookies) and then goes to `next`, a path
on this site only, so the page cannot be used to send people elsewhere.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ferry: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto}}
label,input,button{{display:block;width:100%;margin:.4rem 0}}#error{{color:#b00}}</style>
</head><body><h1>Ferry</h1>
<form id="sign-in"><label>Email <input name="email" type="email" autocomplete="username"
required></label><label>Password <input name="password" type="password"
autocomplete="current-password" required></label><button type="submit">Sign in</button>
<p id="error" role="alert"></p></form>
<script>
document.getElementById("sign-in").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const form = new FormData(event.target);
  const answer = await fetch("/auth/login", {{method: "POST",
    headers: {{"Content-Type": "application/json"}}, credentials: "same-origin",
    body: JSON.stringify({{email: form.get("email"), password: form.get("password")}})}});
  if (answer.ok) {{ window.location.assign({next}); return; }}
  const problem = await answer.json().catch(() => ({{error: "sign-in failed"}}));
  document.getElementById("error").textContent = problem.error || "sign-in failed";
}});
</script></body></html>
"""


DEFAULT_NEXT = "/viewer/"
# Printable ASCII without the backslash: browsers drop tabs and newlines inside a URL and read
# `\` as `/`, so `/\t/evil.example` or `/\evil.example` would leave the site.
_PATH_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F)) - {"\\"}


def safe_next(value: str | None) -> str:
    """A path on this site, as given, or `/viewer/`: never `//host`, a scheme, or odd characters.

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


async def sign_in_page(request: Request) -> HTMLResponse:
    target = safe_next(request.query_params.get("next"))
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "frame-ancestors 'none'"}
    return HTMLResponse(_PAGE.format(next=script_string(target)), headers=headers)
