"""Keys, names, ports and bounds the integration apps are built with (and their tests check)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray's metrics export port for the test session (one value per run: modules share this one).
METRICS_PORT = free_port()
ADMIN_KEY = "test-admin-key-0123456789"
DEV_ADAPTERS = ("pirate", "terse", "pirate-copy")
# The dev app's inference keys (auth.api_keys_file): one for everything, one per tenant.
API_KEY = "sk-test-all-0123456789"
TENANT_KEYS = {"tenant-a": "sk-tenant-a-0123456789", "tenant-b": "sk-tenant-b-0123456789"}
TENANT_ADAPTERS = {"tenant-a": ["pirate"], "tenant-b": ["terse", "pirate-*"]}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# The gptoss app's replica bounds: small, so that the overload test can exceed them.
GPTOSS_ONGOING, GPTOSS_QUEUED = 8, 8
GPTOSS_FETCH_TIMEOUT_S = 3.0
# Names the gpt-oss app registers -> the dev-model adapter folders.
GPTOSS_DEV_ADAPTERS = {"pirate": "gptoss-pirate", "terse": "gptoss-terse"}
# The gang app's keys (two API processes, one engine): API_KEY without a quota,
# and tenants with one each (counted over both processes by the QuotaKeeper).
QUOTA_KEYS = {"flood": "sk-flood-0123456789", "meter": "sk-meter-0123456789"}
QUOTAS = {"flood": {"max_concurrent_requests": 2}, "meter": {"tokens_per_minute": 400}}
