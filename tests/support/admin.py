"""The admin token the test apps and servers are configured with, and the header that presents it."""

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
