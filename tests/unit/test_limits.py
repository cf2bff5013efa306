"""Bounds on costly request fields: measured without recursion, refused with a 400 that names field and bound."""

from __future__ import annotations

import pytest

from serve_app.config import HARMONY_TAG_NESTING, AppConfig, RequestLimits
from serve_app.endpoints import limits
from serve_app.protocol.errors import InvalidRequest


def nested(levels: int) -> dict:
    """An object schema ``levels`` objects deep (2 containers a level: the object and its properties)."""
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def test_schema_depth_and_properties_count_as_vllm_does():
    assert limits.schema_measure({"type": "string"}) == (1, 0)
    assert limits.schema_measure(nested(3)) == (7, 3)
    # A schema far deeper than Python's recursion limit is measured, not crashed on.
    assert limits.schema_measure(nested(5000))[0] == 10001


def test_vllm_counts_nesting_the_same_way():
    vllm_sampling = pytest.importorskip("vllm.sampling_params")
    for levels in (3, 31, 32, 40):
        depth, _ = limits.schema_measure(nested(levels))
        assert not vllm_sampling._exceeds_json_nesting(nested(levels), depth)
        assert vllm_sampling._exceeds_json_nesting(nested(levels), depth - 1)


def test_the_engines_tag_bound_is_vllms(vocab_dir):
    """Our bound on a schema plus the Harmony tag around it stays within what vLLM accepts."""
    import json

    vllm_sampling = pytest.importorskip("vllm.sampling_params")
    from serve_app.config import ENGINE_STRUCTURAL_TAG_NESTING
    from serve_app.harmony import constraints

    assert (
        vllm_sampling.MAX_STRUCTURED_OUTPUT_JSON_NESTING + vllm_sampling.STRUCTURAL_TAG_WRAPPER_NESTING
        == ENGINE_STRUCTURAL_TAG_NESTING
    )
    for tag in (
        constraints.final_json({"type": "object"}),
        constraints.forced_tool_call([{"name": "f", "parameters": {"type": "object"}}]),
    ):
        assert limits.schema_measure(json.loads(tag))[0] - 1 <= HARMONY_TAG_NESTING
    most = RequestLimits().max_schema_depth
    deepest = nested((most - 1) // 2)
    assert limits.schema_measure(deepest)[0] <= most
    assert not vllm_sampling._exceeds_json_nesting(constraints.final_json(deepest), ENGINE_STRUCTURAL_TAG_NESTING)


def test_a_schema_depth_bound_past_the_engines_is_refused_at_build():
    with pytest.raises(ValueError, match="max_schema_depth"):
        AppConfig.model_validate({"model": {"path": "m"}, "limits": {"max_schema_depth": 71}})


@pytest.mark.parametrize(
    "shape, param, bound",
    [
        (limits.RequestShape(messages=5000), "messages", "max_messages"),
        (limits.RequestShape(messages=5000, messages_param="input"), "input", "max_messages"),
        (limits.RequestShape(prompts=3000), "prompt", "max_prompts"),
        (limits.RequestShape(n=129), "n", "max_n"),
        (limits.RequestShape(stop=["a"] * 5), "stop", "max_stop"),
        (limits.RequestShape(stop=["x" * 1025]), "stop", "max_stop_chars"),
        (limits.RequestShape(tools=[{"name": "f"}] * 129), "tools", "max_tools"),
        (limits.RequestShape(tools=[{"name": "f", "description": "x" * (1 << 20)}]), "tools", "max_tools_bytes"),
        (
            limits.RequestShape(schemas=[limits.Schema("text.format.schema", nested(40))]),
            "text.format.schema",
            "max_schema_depth",
        ),
        (limits.RequestShape(schemas=[limits.Schema("s", {"enum": ["x" * (300 << 10)]})]), "s", "max_schema_bytes"),
        (
            limits.RequestShape(
                schemas=[limits.Schema("s", {"type": "object", "properties": {f"p{i}": {} for i in range(5001)}})]
            ),
            "s",
            "max_schema_properties",
        ),
        (limits.RequestShape(logit_bias={i: 1.0 for i in range(1025)}), "logit_bias", "max_logit_bias"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_bound_is_a_400_naming_field_and_bound(shape, param, bound):
    with pytest.raises(InvalidRequest) as err:
        limits.check(RequestLimits(), shape)
    assert err.value.status == 400 and err.value.param == param
    assert f"limits.{bound}" in err.value.message and err.value.code == "limit_exceeded"


def test_within_every_bound_passes():
    limits.check(
        RequestLimits(),
        limits.RequestShape(
            messages=4096,
            n=128,
            stop=["x" * 1024] * 4,
            tools=[{"name": f"f{i}"} for i in range(128)],
            schemas=[limits.Schema("s", nested(31))],
            logit_bias={i: -100.0 for i in range(1024)},
        ),
    )


def test_every_bound_is_in_the_docs_table_with_its_default():
    from pathlib import Path

    table = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for name, field in RequestLimits.model_fields.items():
        assert f"| `limits.{name}` | {field.default} |" in table, name
