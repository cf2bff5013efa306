"""What every endpoint and both topologies stand on: the request context, keys and tenants,
model names, the generation core, bounded waits, HTTP and SSE helpers."""
