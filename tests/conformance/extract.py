"""Write ``openai-spec.json``: the schemas we answer with, from OpenAI's published OpenAPI document.

    python tests/conformance/extract.py <openai-openapi checkout>/openapi.json <commit>

Keeps the named roots and every schema they reference (``$ref`` closure), with
the source commit, so the vendored file is small, pinned and reproducible.
The source: https://github.com/openai/openai-openapi (MIT, see LICENSE-openai-openapi).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "Response",
    "ResponseStreamEvent",
    "ErrorResponse",
    "ListModelsResponse",
    "Model",
    "ResponseItemList",
    "TokenCountsResource",
    "ConversationResource",
    "ConversationItemList",
    "ConversationItem",
    "DeletedConversationResource",
)
PREFIX = "#/components/schemas/"


def refs(node, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            out.add(ref[len(PREFIX) :])
        for value in node.values():
            refs(value, out)
    elif isinstance(node, list):
        for value in node:
            refs(value, out)


def closure(schemas: dict, roots) -> dict:
    keep: dict = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = schemas[name]
        found: set[str] = set()
        refs(schemas[name], found)
        todo += sorted(found - set(keep))
    return dict(sorted(keep.items()))


def main(src: str, commit: str) -> None:
    doc = json.loads(Path(src).read_text())
    out = {
        "source": "https://github.com/openai/openai-openapi",
        "commit": commit,
        "openapi": doc["openapi"],
        "version": doc["info"]["version"],
        "roots": list(ROOTS),
        "schemas": closure(doc["components"]["schemas"], ROOTS),
    }
    dest = Path(__file__).with_name("openai-spec.json")
    dest.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"{dest}: {len(out['schemas'])} schemas from {commit}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
