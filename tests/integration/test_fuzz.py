"""Hostile input against the real engine: the issue's findings as regressions, then schemathesis on every operation.

The router tier fuzzes the API in process (``tests/unit/test_fuzz_router.py``);
here the same fuzzer runs against the gpt-oss dev app over HTTP, so that what
only the engine decides (a grammar its backend refuses, a token id outside the
vocabulary) is covered too. ``FUZZ_LIVE_EXAMPLES`` sets the examples per
operation (short in ``make test``, longer in ``make fuzz``). After it, a normal
request is served: nothing took the engine down.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis

from serve_app.router.openapi import OPERATIONS
from tests.support.constants import ADMIN_KEY
from tests.support.fuzz import cases, fuzz

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
EXAMPLES = int(os.environ.get("FUZZ_LIVE_EXAMPLES", "6"))
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
USER = [{"role": "user", "content": "Give me a JSON object."}]


def deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def chat_format(schema: dict) -> dict:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    return {"messages": USER, "response_format": fmt}


def responses_format(schema: dict) -> dict:
    return {"input": "Give me JSON.", "text": {"format": {"type": "json_schema", "name": "x", "schema": schema}}}


def forced_tool(parameters: dict) -> dict:
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    return {"messages": USER, "tools": [tool], "tool_choice": "required"}


BAD_PATTERN = {"type": "object", "properties": {"a": {"type": "string", "pattern": "["}}}
LOOKBEHIND = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}


@pytest.fixture(scope="module")
def url(serve_url, gptoss_app) -> str:
    return f"{serve_url}/gptoss"


@pytest.mark.parametrize(
    "path, body, param, words",
    [
        ("/v1/chat/completions", chat_format(BAD_PATTERN), "response_format.json_schema.schema", "regex"),
        ("/v1/chat/completions", chat_format(LOOKBEHIND), "response_format.json_schema.schema", "lookbehind"),
        ("/v1/chat/completions", chat_format(deep(64)), "response_format.json_schema.schema", "max_schema_depth"),
        ("/v1/responses", responses_format(BAD_PATTERN), "text.format.schema", "regex"),
        ("/v1/responses", responses_format(deep(64)), "text.format.schema", "max_schema_depth"),
        ("/v1/chat/completions", forced_tool(LOOKBEHIND), "tools", "lookbehind"),
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {str(i): 1 for i in range(100_000)}}, "logit_bias",
         "max_logit_bias"),
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {"999999999": 5}}, "logit_bias", "logit_bias"),
    ],
    ids=["pattern", "lookbehind", "depth-64", "responses-pattern", "responses-depth", "tool-lookbehind",
         "bias-100k", "bias-out-of-vocab"],
)  # fmt: skip
def test_a_requests_own_content_is_a_400_that_names_it(url, path, body, param, words):
    """Once 503 engine_unavailable (retried twice by the SDK) or 200 for a request the engine could not use."""
    r = httpx.post(f"{url}{path}", json={"model": BASE, "max_tokens": 8, **body}, timeout=120)
    print(f"\n{path} -> {r.status_code} {r.text[:400]}")  # the figures of the table (pytest -s)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert words.lower() in err["message"].lower(), err
    assert "/project/" not in err["message"] and ".cc:" not in err["message"], err


@pytest.mark.parametrize("source", ["devmodel:../../etc", "devmodel:/etc", "devmodel:", "devmodel:adapters/../../.."])
def test_a_devmodel_source_outside_its_folder_is_a_400(url, source):
    """Once a 500 internal_error."""
    r = httpx.post(f"{url}/v1/adapters", json={"name": "escape", "source": source}, headers=ADMIN, timeout=60)
    print(f"\n{source} -> {r.status_code} {r.text[:400]}")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "source" and source in r.json()["error"]["message"]


def test_fuzzed_requests_against_the_engine_are_never_a_server_error(url):
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ran = []
    for path, method, mode in cases(OPERATIONS):
        headers = ADMIN if path.startswith("/v1/adapters") else {}
        fuzz(api, path, method, mode, headers=headers, examples=EXAMPLES, model=BASE, base_url=url, cap=True)
        ran.append(f"{method.upper()} {path} {mode.value}")
    print(f"\nfuzzed {len(ran)} operation/mode pairs, {EXAMPLES} examples each (FUZZ_LIVE_EXAMPLES)")
    # Nothing above took the engine down.
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": BASE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
        timeout=120,
    )
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length"), r.text
