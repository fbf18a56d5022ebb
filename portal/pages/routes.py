"""Every page's route, and the static files (`/static`: ferry.css, the vendored htmx).

Areas add their own list here: `front` (sign-in, register), `dashboard`, `transfers`,
`requests`, `account`; the transfer-creation pages and the administration pages join as
`portal.pages.transfer_new`, `portal.pages.admin` (with `push_routes` and `admin_jobs`) and
`portal.pages.oversight` with templates in
`transfers/`, `admin/` and `oversight/`.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from portal.pages import (
    account,
    admin,
    admin_jobs,
    dashboard,
    email_links,
    front,
    oidc_sign_in,
    oversight,
    profiles,
    push_routes,
    requests,
    transfer_new,
    transfers,
)
from portal.templating import STATIC_DIR, STATIC_PATH

FRONT: list[BaseRoute] = [
    Route("/", front.home, methods=["GET"]),
    Route("/sign-in", front.sign_in_page, methods=["GET"]),
    Route("/auth/login", front.sign_in_page, methods=["GET"]),  # older links, emails
    Route("/sign-in", front.sign_in, methods=["POST"]),
    Route("/sign-out", front.sign_out, methods=["POST"]),
    Route("/sign-in/oidc/{provider}", oidc_sign_in.start, methods=["GET"]),
    Route("/sign-in/oidc/{provider}/callback", oidc_sign_in.callback, methods=["GET"]),
    Route("/register", front.register_page, methods=["GET"]),
    Route("/register", front.register_person, methods=["POST"]),
]

ACCOUNT: list[BaseRoute] = [
    Route("/account/notifications", account.notifications_page, methods=["GET"]),
    Route("/account/notifications", account.save_notifications, methods=["POST"]),
]

DASHBOARD: list[BaseRoute] = [
    Route("/institutions/{code}", dashboard.dashboard, methods=["GET"]),
    Route("/institutions/{code}/find", dashboard.find_patient, methods=["POST"]),
]

REQUESTS: list[BaseRoute] = [
    Route("/institutions/{code}/requests/new", requests.new_request, methods=["GET"]),
    Route("/institutions/{code}/requests", requests.create, methods=["POST"]),
    Route("/requests/{request_id}", requests.request_page, methods=["GET"]),
    Route("/requests/{request_id}/search", requests.search, methods=["POST"]),
    Route("/requests/{request_id}/answer", requests.answer, methods=["POST"]),
    Route("/requests/{request_id}/nothing-found", requests.nothing_found, methods=["POST"]),
    Route("/requests/{request_id}/reject", requests.reject, methods=["POST"]),
    Route("/requests/{request_id}/cancel", requests.cancel, methods=["POST"]),
]

TRANSFERS: list[BaseRoute] = [
    Route("/transfers/{transfer_id}", transfers.transfer_page, methods=["GET"]),
    Route("/transfers/{transfer_id}/view", transfers.view_study, methods=["POST"]),
    Route("/transfers/{transfer_id}/deliver", transfers.deliver, methods=["POST"]),
    Route("/transfers/{transfer_id}/done", transfers.mark_done, methods=["POST"]),
    Route("/transfers/{transfer_id}/return", transfers.send_back, methods=["POST"]),
]

EMAIL_LINKS: list[BaseRoute] = [
    Route("/portal/transfers/{pk}", email_links.transfer_link, methods=["GET"]),
    Route("/portal/requests/{pk}", email_links.request_link, methods=["GET"]),
]

SENDING: list[BaseRoute] = [
    Route("/institutions/{code}/send", transfer_new.send_page, methods=["GET"]),
    Route("/institutions/{code}/send", transfer_new.send_studies, methods=["POST"]),
    Route("/institutions/{code}/send/search", transfer_new.search_studies, methods=["POST"]),
    Route(
        "/institutions/{code}/send/drafts/{transfer_id}",
        transfer_new.draft_summary,
        methods=["GET"],
    ),
    Route(
        "/institutions/{code}/send/drafts/{transfer_id}", transfer_new.send_draft, methods=["POST"]
    ),
]

ADMINISTRATION: list[BaseRoute] = [
    Route("/institutions/{code}/admin", admin.registrations_page, methods=["GET"]),
    Route(
        "/institutions/{code}/admin/registrations/{registration_pk}",
        admin.decide_registration,
        methods=["POST"],
    ),
    Route("/institutions/{code}/admin/people", admin.people_page, methods=["GET"]),
    Route("/institutions/{code}/admin/people/{user_pk}", admin.save_roles, methods=["POST"]),
    Route("/institutions/{code}/admin/nodes", admin.nodes_page, methods=["GET"]),
    Route("/institutions/{code}/admin/nodes", admin.add_node, methods=["POST"]),
    Route("/institutions/{code}/admin/nodes/{node_pk}/remove", admin.remove_node, methods=["POST"]),
    Route("/institutions/{code}/admin/nodes/{node_pk}", admin.node_page, methods=["GET"]),
    Route("/institutions/{code}/admin/nodes/{node_pk}/echo", admin.check_node, methods=["POST"]),
    Route(
        "/institutions/{code}/admin/nodes/{node_pk}/rights", admin.add_node_right, methods=["POST"]
    ),
    Route(
        "/institutions/{code}/admin/nodes/{node_pk}/rights/{permission_pk}/remove",
        admin.remove_node_right,
        methods=["POST"],
    ),
    Route("/institutions/{code}/admin/rules", admin.rules_page, methods=["GET"]),
    Route("/institutions/{code}/admin/rules", admin.add_rule, methods=["POST"]),
    Route("/institutions/{code}/admin/rules/{rule_pk}/remove", admin.remove_rule, methods=["POST"]),
    Route("/institutions/{code}/admin/hours", admin.save_hours, methods=["POST"]),
    Route("/institutions/{code}/admin/holidays", admin.add_a_holiday, methods=["POST"]),
    Route(
        "/institutions/{code}/admin/holidays/{day}/remove",
        admin.remove_a_holiday,
        methods=["POST"],
    ),
    Route("/institutions/{code}/admin/api-clients", admin.api_clients_page, methods=["GET"]),
    Route("/institutions/{code}/admin/api-clients", admin.create_client, methods=["POST"]),
    Route(
        "/institutions/{code}/admin/api-clients/{client_pk}/tokens",
        admin.issue_token,
        methods=["POST"],
    ),
    Route(
        "/institutions/{code}/admin/api-clients/{client_pk}/tokens/{token_id}/revoke",
        admin.revoke_token,
        methods=["POST"],
    ),
    Route("/institutions/{code}/admin/routes", push_routes.routes_page, methods=["GET"]),
    Route("/institutions/{code}/admin/routes", push_routes.add_route, methods=["POST"]),
    Route(
        "/institutions/{code}/admin/routes/{route_pk}/remove",
        push_routes.remove_route,
        methods=["POST"],
    ),
    Route("/institutions/{code}/admin/profiles", profiles.profiles_page, methods=["GET"]),
    Route("/institutions/{code}/admin/profiles", profiles.add_a_profile, methods=["POST"]),
    Route(
        "/institutions/{code}/admin/profiles/{profile}/remove",
        profiles.remove_a_profile,
        methods=["POST"],
    ),
    Route(
        "/institutions/{code}/admin/profiles/{profile}/preview",
        profiles.preview_a_profile,
        methods=["POST"],
    ),
    Route("/institutions/{code}/admin/jobs", admin_jobs.jobs_page, methods=["GET"]),
    Route("/institutions/{code}/admin/jobs/{job_pk}/retry", admin_jobs.retry, methods=["POST"]),
    Route(
        "/institutions/{code}/admin/transfers/{transfer_id}/resend",
        admin_jobs.resend,
        methods=["POST"],
    ),
    Route(
        "/institutions/{code}/admin/transfers/{transfer_id}/mark-delivered",
        admin_jobs.mark_delivered,
        methods=["POST"],
    ),
    Route(
        "/institutions/{code}/admin/api-clients/{client_pk}/revoke",
        admin.revoke_client,
        methods=["POST"],
    ),
]

OVERSIGHT: list[BaseRoute] = [
    Route("/institutions/{code}/oversight", oversight.transactions_page, methods=["GET"]),
    Route(
        "/institutions/{code}/oversight/transactions",
        oversight.transactions_page,
        methods=["GET"],
    ),
    Route(
        "/institutions/{code}/oversight/transactions",
        oversight.transactions_page,
        methods=["POST"],
    ),
    Route(
        "/institutions/{code}/oversight/transactions/csv",
        oversight.transactions_csv,
        methods=["POST"],
    ),
    Route("/institutions/{code}/oversight/audit", oversight.audit_page, methods=["GET", "POST"]),
    Route("/institutions/{code}/oversight/audit/csv", oversight.audit_csv, methods=["POST"]),
    Route("/institutions/{code}/oversight/statistics", oversight.statistics_page, methods=["GET"]),
]

ROUTES: list[BaseRoute] = [
    *FRONT,
    *DASHBOARD,
    *TRANSFERS,
    *REQUESTS,
    *EMAIL_LINKS,
    *SENDING,
    *ADMINISTRATION,
    *OVERSIGHT,
    *ACCOUNT,
    Mount(STATIC_PATH, app=StaticFiles(directory=STATIC_DIR), name="static"),
]
