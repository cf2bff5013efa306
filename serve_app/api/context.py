"""What a route handler works with: config, the generation core, models, keys, stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection, Request

from serve_app.api.auth import KeyRing, Principal
from serve_app.api.core import GenerationCore
from serve_app.api.http import read_json
from serve_app.api.models import ModelResolver
from serve_app.config import AppConfig
from serve_app.quotas.gate import QuotaGate


@dataclass
class Services:
    cfg: AppConfig
    core: GenerationCore
    models: ModelResolver
    keys: KeyRing
    # The ResponseStore deployment's handle (stored responses), or None.
    responses_store: Any = None
    # Per-tenant quotas (the QuotaKeeper's gate), or None when they are off.
    quotas: QuotaGate | None = None

    def principal(self, request: HTTPConnection) -> Principal:
        """The caller, from its bearer key (401 without a valid one, when keys are configured)."""
        return self.keys.authenticate(request.headers.get("authorization"))

    async def body(self, request: Request) -> Any:
        return await read_json(request, self.cfg.router.max_request_bytes)
