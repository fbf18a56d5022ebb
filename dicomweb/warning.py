"""The HTTP `Warning` header as PS3.18 8.3.5.1 uses it: code 299, Ferry as agent, a reason."""

from __future__ import annotations

from collections.abc import Iterable

_MAX_LENGTH = 4000


def _safe(text: str) -> str:
    """Header values are ASCII without controls; client text (parameter names) may be neither."""
    cleaned = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return cleaned.replace('"', "'").replace("\\", "/")


def warning_header(messages: Iterable[str]) -> str:
    return ", ".join(f'299 ferry "{_safe(message)}"' for message in messages)[:_MAX_LENGTH]
