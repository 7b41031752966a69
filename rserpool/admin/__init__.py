"""The operator's door: an HTTPS admin endpoint with a status page, a JSON
API and Prometheus metrics (issue 15).  See docs/operations.md."""

from rserpool.admin.access import ACTION_ADMIN, AdminAccess, Grant, TokenError, load_token
from rserpool.admin.service import AdminService, AdminSettings

__all__ = ["ACTION_ADMIN", "AdminAccess", "AdminService", "AdminSettings", "Grant", "TokenError", "load_token"]
