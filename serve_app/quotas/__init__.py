"""Per-tenant quotas: concurrent requests and tokens per minute, counted where every replica sees them."""
