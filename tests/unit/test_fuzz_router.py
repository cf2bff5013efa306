"""The router's API fuzzed from its own OpenAPI document (schemathesis), in process, with a fake replica.

Every operation of ``/openapi.json``, with bodies that fit its schema and
bodies that do not: no answer may be a 5xx, every status must be one the
document names, bodies (and each streamed event) must match their schemas,
and no answer may carry a traceback or a file path. The engine's own refusals
(a grammar its backend rejects) are fuzzed against the real engine in the
integration tier (``tests/integration/test_fuzz.py``). ``FUZZ_EXAMPLES`` sets
the examples per operation (``make fuzz`` raises it).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from schemathesis import GenerationMode

from serve_app.router.openapi import OPERATIONS
from tests.support.fake_router import AUTH, BASE
from tests.support.fuzz import cases, fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
ENGINE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")


@pytest.fixture(scope="module")
def router_api(fakes):
    client, _, _ = fakes
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)


@pytest.mark.parametrize(
    "path, method, mode", [pytest.param(*c, id=f"{c[1]} {c[0]} {c[2].value}") for c in cases(OPERATIONS)]
)
def test_no_request_is_a_server_error(router_api, fakes, path, method, mode):
    _, replica, _ = fakes
    before = len(replica.requests)
    fuzz(router_api, path, method, mode, headers=AUTH, examples=EXAMPLES, model=BASE)
    if mode is GenerationMode.POSITIVE and path in ENGINE_PATHS:
        assert len(replica.requests) > before, "no generated request reached the engine"
