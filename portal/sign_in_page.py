"""`GET /auth/login`: the smallest sign-in page a person needs before opening the viewer.

The form posts to `POST /auth/login` (session and CSRF cookies) and then goes to `next`, a path
on this site only, so the page cannot be used to send people elsewhere.
"""

from __future__ import annotations

import html

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


def _safe_next(value: str | None) -> str:
    """Only a path on this site: `/viewer/`, never `//evil.example` or `https://...`."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/viewer/"
    return value


async def sign_in_page(request: Request) -> HTMLResponse:
    target = _safe_next(request.query_params.get("next"))
    quoted = '"' + html.escape(target, quote=True).replace("\\", "") + '"'
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "frame-ancestors 'none'"}
    return HTMLResponse(_PAGE.format(next=quoted), headers=headers)
