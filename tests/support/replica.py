"""Calling the LLMReplica handle directly: requests, streams, batches."""

from __future__ import annotations

import uuid

from serve_app.protocol.engine import GenerateRequest, SamplingOptions, TokenChunk

STOP = [200002, 200012]  # <|return|>, <|call|>


def _request(prompt: list[int], adapter: str | None = None, **sampling) -> GenerateRequest:
    opts = {"temperature": 0.0, "max_tokens": 128, "stop_token_ids": STOP} | sampling
    return GenerateRequest(
        request_id=f"test-{uuid.uuid4().hex}",
        prompt_token_ids=prompt,
        sampling=SamplingOptions(**opts),
        adapter=adapter,
    )


def _start(handle, req: GenerateRequest):
    return handle.options(stream=True, multiplexed_model_id=req.adapter or "").generate.remote(req)


def _collect(stream) -> tuple[list[int], list[TokenChunk]]:
    chunks = [TokenChunk.from_wire(c) for c in stream]
    return [t for c in chunks for t in c.token_ids], chunks


def _run_all(handle, reqs: list[GenerateRequest], window: int | None = None) -> list[list[int]]:
    """Submit requests (``window`` at a time) before reading any, so they share engine batches."""
    window = window or len(reqs)
    out: list[list[int]] = []
    for i in range(0, len(reqs), window):
        streams = [_start(handle, r) for r in reqs[i : i + window]]
        out += [_collect(s)[0] for s in streams]
    return out
