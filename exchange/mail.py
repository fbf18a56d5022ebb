"""Notification emails: plain text and HTML (multipart/alternative), without patient data.

An email crosses the internet, so it names only the event, the institutions, the priority and
a link into Ferry by opaque reference (`/portal/transfers/12`); never a patient's name or ID, an
accession number or a UID. People open the link and sign in to see more.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from exchange.notifications import Event, EventKind, Priority

PREFERENCES_PATH = "/account/notifications"  # the portal page; the API is /api/me/notifications

# kind -> (headline, sentence); {institution} and {counterpart} are institution labels.
WORDING: Mapping[EventKind, tuple[str, str]] = {
    EventKind.TRANSFER_ARRIVED: (
        "Transfer arrived at {institution}",
        "A study sent by {counterpart} arrived at {institution}.",
    ),
    EventKind.TRANSFER_DELIVERED: (
        "Transfer delivered to {counterpart}",
        "A study sent by {institution} was delivered to {counterpart}.",
    ),
    EventKind.TRANSFER_PARTLY_DELIVERED: (
        "Transfer partly delivered to {counterpart}",
        "Part of a study sent by {institution} was not accepted by {counterpart}; "
        "Ferry keeps trying.",
    ),
    EventKind.TRANSFER_FAILED: (
        "Transfer failed",
        "A study sent by {institution} to {counterpart} could not be delivered.",
    ),
    EventKind.TRANSFER_EXPIRED: (
        "Transfer expired before {counterpart} downloaded it",
        "A study sent by {institution} to {counterpart} was neither downloaded nor delivered "
        "before {counterpart}'s retention period ended; {counterpart} no longer has it.",
    ),
    EventKind.TRANSFER_NOT_SENT: (
        "Transfer to {counterpart} not sent",
        "Ferry could not fetch every study picked on a PACS of {institution} for {counterpart}, "
        "so it did not send them; the transfer's history says why.",
    ),
    EventKind.REQUEST_RECEIVED: (
        "Request received from {counterpart}",
        "{counterpart} asked {institution} for a study.",
    ),
    EventKind.REQUEST_ANSWERED: (
        "Request answered by {counterpart}",
        "{counterpart} answered a request of {institution}.",
    ),
    EventKind.REQUEST_REJECTED: (
        "Request rejected by {counterpart}",
        "{counterpart} rejected a request of {institution}.",
    ),
    EventKind.ANSWER_NOT_SENT: (
        "Answer to {counterpart} not sent",
        "Ferry could not fetch the studies picked on a PACS of {institution} to answer a "
        "request of {counterpart}, so nothing was sent; the request's history says why.",
    ),
    EventKind.REGISTRATION_WAITING: (
        "Registration waiting at {institution}",
        "Someone asked to join {institution}; an administrator approves or rejects it.",
    ),
    EventKind.REGISTRATION_APPROVED: (
        "Registration approved at {institution}",
        "Your registration at {institution} was approved: you can sign in now.",
    ),
    EventKind.REGISTRATION_REJECTED: (
        "Registration rejected at {institution}",
        "Your registration at {institution} was not accepted.",
    ),
    EventKind.STUDY_EXPIRING: (
        "Study about to expire at {institution}",
        "A study of {institution} reaches the end of its retention period soon and will "
        "then be deleted.",
    ),
}


@dataclass(frozen=True)
class Letter:
    """What one email says, before it becomes a message."""

    headline: str
    sentence: str
    priority: Priority
    link: str | None
    preferences: str
    choice: str

    def subject(self) -> str:
        urgent = "URGENT: " if self.priority is Priority.URGENT else ""
        return f"[Ferry] {urgent}{self.headline}"

    def text(self) -> str:
        lines = [self.sentence, "", f"Priority: {self.priority.value}"]
        if self.link:
            lines.append(f"Open it in Ferry (sign-in needed): {self.link}")
        lines += ["", "--", self._why()]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        escape = html.escape
        link = (
            f'<p><a href="{escape(self.link)}">Open it in Ferry</a> (sign-in needed)</p>'
            if self.link
            else ""
        )
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(self.headline)}</title></head><body>"
            f"<h1>{escape(self.headline)}</h1><p>{escape(self.sentence)}</p>"
            f"<p>Priority: <strong>{escape(self.priority.value)}</strong></p>{link}"
            f"<hr><p><small>{escape(self._why())}</small></p></body></html>\n"
        )

    def _why(self) -> str:
        return (
            f'You get this email because your notification setting is "{self.choice}"; '
            f"change it at {self.preferences} (all, own, failures or none)."
        )


def link_path(event: Event) -> str | None:
    """Where in Ferry the event is seen; opaque references only."""
    kind, pk = event.subject.kind, event.subject.pk
    if event.kind is EventKind.REGISTRATION_APPROVED:
        return "/auth/login"
    if event.kind is EventKind.REGISTRATION_REJECTED:
        return None
    if kind == "study":
        return f"/portal/studies/{pk}"  # the index's own key, never a UID
    return f"/portal/{kind}s/{pk}"


def write_letter(event: Event, labels: Mapping[int, str], base_url: str, choice: str) -> Letter:
    """`labels`: institution pk -> "Name (CODE)"."""
    headline, sentence = WORDING[event.kind]
    names = {
        "institution": labels.get(event.institution_pk, "your institution"),
        "counterpart": labels.get(event.counterpart_pk or 0, "another institution"),
    }
    path = link_path(event)
    return Letter(
        headline.format(**names),
        sentence.format(**names),
        event.priority,
        f"{base_url}{path}" if path else None,
        f"{base_url}{PREFERENCES_PATH}",
        choice,
    )


def compose(letter: Letter, sender: str, to: str, now: datetime) -> EmailMessage:
    """The message: text first, HTML as the alternative (RFC 2046 5.1.4)."""
    message = EmailMessage()
    message["Subject"] = letter.subject()
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(now)
    domain = parseaddr(sender)[1].rpartition("@")[2]
    message["Message-ID"] = make_msgid("ferry", domain=domain or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    if letter.priority is Priority.URGENT:
        message["Importance"] = "high"
    message.set_content(letter.text())
    message.add_alternative(letter.html(), subtype="html")
    return message
