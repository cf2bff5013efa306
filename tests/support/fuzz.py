"""Fuzzing our API from its own OpenAPI document with schemathesis (unit tier in process, integration live).

``fuzz`` sends ``examples`` generated requests to one operation and runs
schemathesis's checks on every answer (no 5xx, a documented status and
content type, a body that matches its schema) plus ``no_internals_leaked``.
Valid bodies name the served model (else nearly all end at a 404 before the
engine) and, against a live engine, ask for few tokens.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# A Python traceback in any answer; a path of this machine's file system in an error (the
# admin API shows an adapter's source, which its caller gave; a model may write a path).
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"/[^\"]+\", line \d+")
LOCAL_PATH = re.compile(r"/(?:home|root|usr|tmp|opt|srv|var|proc|etc)/\w|\.(?:py|cc|cpp|so)\b:?\d*")
# Fields that make a live request long (tokens to generate, choices): capped in valid bodies.
_CAPS = {"max_tokens": 8, "max_completion_tokens": 8, "max_output_tokens": 8, "n": 2, "best_of": 2}


def no_internals_leaked(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """No answer carries a traceback; no error carries a local file path or a source file."""
    body = response.text or ""
    match = TRACEBACK.search(body)
    if match is None and response.status_code >= 400:
        # A path the request itself sent (an adapter source, say), echoed back, is no leak.
        sent = json.dumps([case.body, case.path_parameters, case.query], default=str, ensure_ascii=False)
        match = next((m for m in LOCAL_PATH.finditer(body) if m.group(0) not in sent), None)
    if match is not None:
        raise AssertionError(f"the answer leaks internals near {body[max(0, match.start() - 60) : match.end() + 60]!r}")
    return None


def for_model(model: str, cap: bool):
    """A valid body as it would be sent: the served model, and (``cap``) few tokens and choices."""

    def fix(case):
        if isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model
            if cap:
                for key, most in _CAPS.items():
                    if isinstance(case.body.get(key), int) and not isinstance(case.body[key], bool):
                        case.body[key] = max(1, min(case.body[key], most))
                case.body.pop("ignore_eos", None)
                # Left out, the budget is the rest of the context: a long generation, not a finding.
                if "input" in case.body:
                    case.body.setdefault("max_output_tokens", _CAPS["max_output_tokens"])
                elif "max_completion_tokens" not in case.body:
                    case.body.setdefault("max_tokens", _CAPS["max_tokens"])
        return case

    return fix


def fuzz(
    api: Any,
    path: str,
    method: str,
    mode: GenerationMode,
    *,
    headers: dict[str, str],
    examples: int,
    model: str,
    base_url: str | None = None,
    cap: bool = False,
) -> None:
    """``examples`` generated requests to one operation; the first failing check fails (shrunk by hypothesis)."""
    operation = api[path][method.upper()]
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        strategy = strategy.map(for_model(model, cap))
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case):
        # A batch of thousands of prompts is slow on a busy box, not wrong: time bounds are not what is fuzzed.
        kwargs: dict[str, Any] = {"timeout": 120}
        if base_url:
            kwargs["base_url"] = base_url
        case.call_and_validate(headers=headers, checks=checks, additional_checks=[no_internals_leaked], **kwargs)

    run()


def cases(operations) -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid inputs, and with invalid ones where it has inputs to break."""
    out = []
    for op in operations:
        out.append((op.path, op.method, GenerationMode.POSITIVE))
        if op.request is not None or "{" in op.path:
            out.append((op.path, op.method, GenerationMode.NEGATIVE))
    return out
