"""The base of every request model on the wire: lenient, unknown fields ignored.

Strict config, lenient wire: clients send fields we do not use. Validation
errors become 400s in the one error shape, named by their JSON path
(``validation_error``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.protocol.errors import InvalidRequest


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


# OpenAI's logit_bias: token ids (as JSON object keys) to a bias in -100..100.
LogitBias = dict[int, Annotated[float, Field(ge=-100, le=100)]]


_ROLES = {"system", "developer", "user", "assistant", "tool"}
_TYPE_NAMES = {"str", "int", "float", "bool"}


def _json_path(loc: tuple) -> str:
    """pydantic's error location as the JSON path the client wrote.

    Locations also name union members (``str``, ``list[TextPart]``, a role or
    type tag after a list index, a validator); those are not in the JSON.
    """
    parts: list[str] = []
    prev: Any = None
    for p in loc:
        skip = isinstance(p, str) and (
            "[" in p or "(" in p or p in _TYPE_NAMES or (isinstance(prev, int) and (p in _ROLES or p in _TAGS))
        )
        if not skip:
            parts.append(str(p))
        prev = p
    return ".".join(parts)


# Discriminator values of the Responses API's input items, which pydantic puts in locations.
_TAGS = {"message", "function_call", "function_call_output", "reasoning", "item_reference", "unsupported"}


def validation_error(e: ValidationError, deepest: bool = False) -> InvalidRequest:
    """The first schema violation (or the most specific one), named by its JSON path, as a 400.

    ``deepest``: of a union's failed branches, the one that got furthest (a
    list of items that are not a string says more than "not a valid string").
    """
    errors = e.errors()
    err = max(errors, key=lambda x: len(x["loc"])) if deepest else errors[0]
    path = _json_path(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"{path}: {msg}" if path else msg, param=path or None)


def parse(model: type[BaseModel], body: Any, deepest: bool = False) -> Any:
    """``body`` as ``model``, or the 400 that says what is wrong with it."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise validation_error(e, deepest) from None
