"""Every portal sign-in, allowed or refused, as a `login` audit event (PS3.15 A.5.3, 110114)."""

from __future__ import annotations

from starlette.requests import Request

from audit.trail import AuditRecord, record


def audit_sign_in(request: Request, email: str, allowed: bool, reason: str, **detail: str) -> None:
    """One `login` event: who (the email offered or proved, else anonymous), how, and why not."""
    record(
        request.app.state.archive.engine,
        AuditRecord(
            action="login",
            outcome="allowed" if allowed else "denied",
            actor=email or "anonymous",
            actor_kind="user" if email else "anonymous",
            reason=reason,
            client_address=request.client.host if request.client else "",
            detail={"protocol": "portal", "path": request.url.path, **detail},
        ),
    )
