"""The ingress: OpenAI-compatible HTTP API."""
