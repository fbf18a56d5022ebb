"""The admin API's world of institutions and people, shared by the portal's test modules."""

from tests.portal.test_admin_api import world  # noqa: F401
