"""The person's own settings: which emails they get (`/account/notifications`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.notification_models import NotificationChoice
from portal.api_schemas import NotificationsIn, NotificationsOut
from portal.notifications_api import get_my_notifications, set_my_notifications
from portal.pages.session import Visitor, form_input, render, run_operation, signed_in

CHOICES = {
    NotificationChoice.ALL: "Everything that happens in my institutions",
    NotificationChoice.OWN: "What I did, and what is addressed to me",
    NotificationChoice.FAILURES: "Only what went wrong",
    NotificationChoice.NONE: "No emails",
}


@signed_in
async def notifications_page(request: Request, visitor: Visitor) -> Response:
    current: NotificationsOut = await run_operation(request, visitor, get_my_notifications)
    context = {"current": current, "choices": CHOICES}
    return render(request, "account/notifications.html", context, visitor=visitor)


@signed_in
async def save_notifications(request: Request, visitor: Visitor) -> Response:
    body = form_input(NotificationsIn, {"choice": visitor.form.get("choice", "")})
    await run_operation(request, visitor, set_my_notifications, body=body)
    return RedirectResponse("/account/notifications?done=saved", status_code=303)
