"""Backpressure: what a burst beyond the replicas' bounds gets.

    .venv/bin/python benchmarks/diagnostics/overload.py [--ongoing 8] [--queued 8] [--extra 16] [--tokens 128]

Starts a local Ray Serve with configs/dev-cpu.yaml on a free 127.0.0.1 port,
its replica bounded to ``--ongoing`` running and ``--queued`` queued
requests. Then ``burst``: first ``ongoing + queued`` streams that fit (each
forced to ``--tokens`` output tokens), and once the running ones stream,
``--extra`` more. The extra ones should get 429 with Retry-After at once,
while every stream that fit completes. Prints one table row per outcome.
The integration tests run ``burst`` against their own bounded app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "Count from one to twenty"}]


@dataclass
class Outcome:
    kind: str  # fitting | extra
    status: int | None = None
    done: bool = False  # a finish_reason and [DONE] arrived
    retry_after: str | None = None
    error: dict | None = None
    seconds: float = 0.0
    hung: bool = False


@dataclass
class BurstResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, kind: str, pred) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind and pred(o))

    def table(self) -> list[dict]:
        rows = []
        for kind in ("fitting", "extra"):
            mine = [o for o in self.outcomes if o.kind == kind]
            rows.append(
                {
                    "requests": kind,
                    "sent": len(mine),
                    "completed": self.count(kind, lambda o: o.status == 200 and o.done),
                    "refused_429": self.count(kind, lambda o: o.status == 429),
                    "other_errors": self.count(kind, lambda o: o.status not in (200, 429) and not o.hung),
                    "hung": self.count(kind, lambda o: o.hung),
                    "max_s": round(max((o.seconds for o in mine), default=0.0), 2),
                }
            )
        return rows


async def _one(
    client,
    url: str,
    model: str,
    tokens: int,
    headers: dict,
    outcome: Outcome,
    started: asyncio.Event | None,
    timeout_s: float,
) -> None:
    body = {
        "model": model,
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
    }
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                outcome.status = r.status_code
                outcome.retry_after = r.headers.get("retry-after")
                if r.status_code != 200:
                    outcome.error = json.loads(await r.aread()).get("error")
                    return
                if started is not None:
                    started.set()
                finished = False
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        outcome.done = finished
                    elif line.startswith("data: "):
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            outcome.error = chunk["error"]
                        elif any(c.get("finish_reason") for c in chunk.get("choices", [])):
                            finished = True
    except TimeoutError:
        outcome.hung = True
    finally:
        outcome.seconds = time.perf_counter() - t0


async def burst(
    url: str,
    model: str,
    ongoing: int,
    queued: int,
    extra: int,
    tokens: int = 128,
    headers: dict | None = None,
    timeout_s: float = 180.0,
) -> BurstResult:
    """Fill every running and queued slot, then send ``extra`` more while those stream."""
    import httpx

    headers = headers or {}
    result = BurstResult()
    limits = httpx.Limits(max_connections=ongoing + queued + extra + 8)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        events = [asyncio.Event() for _ in range(ongoing)]
        fitting = []
        for i in range(ongoing + queued):
            o = Outcome("fitting")
            result.outcomes.append(o)
            fitting.append(
                asyncio.create_task(
                    _one(client, url, model, tokens, headers, o, events[i] if i < ongoing else None, timeout_s)
                )
            )
            if i == ongoing - 1:
                # Running first, then the queued ones, so that which requests
                # hold the slots does not depend on arrival races.
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout_s)
        await asyncio.sleep(1.0)  # the queued ones reach the router's queue
        extras = []
        for _ in range(extra):
            o = Outcome("extra")
            result.outcomes.append(o)
            extras.append(asyncio.create_task(_one(client, url, model, tokens, headers, o, None, timeout_s)))
        await asyncio.gather(*fitting, *extras)
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ongoing", type=int, default=8)
    parser.add_argument("--queued", type=int, default=8)
    parser.add_argument("--extra", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from serve_app.app import build_app

    doc = yaml.safe_load((REPO / "configs" / "dev-cpu.yaml").read_text())
    app_args = doc["applications"][0]["args"]
    app_args["lora"] = {"enabled": False}
    app_args["replica"].update(max_ongoing_requests=args.ongoing, max_queued_requests=args.queued)
    app_args["replica"]["autoscaling"]["target_ongoing_requests"] = args.ongoing
    port = _free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(app_args), name="overload", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        result = asyncio.run(burst(url, "gpt-oss-20b", args.ongoing, args.queued, args.extra, args.tokens))
        rows = result.table()
        if args.json:
            print(json.dumps(rows))
        print(f"bounds: {args.ongoing} running + {args.queued} queued per replica; {args.tokens} tokens each")
        print("| requests | sent | completed | refused 429 | other errors | hung | slowest s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['requests']} | {r['sent']} | {r['completed']} | {r['refused_429']} | "
                f"{r['other_errors']} | {r['hung']} | {r['max_s']} |"
            )
        refusal = next((o for o in result.outcomes if o.status == 429), None)
        if refusal:
            print(f"a refusal: Retry-After {refusal.retry_after}, error {json.dumps(refusal.error)}")
        failure = next((o for o in result.outcomes if o.status not in (200, 429)), None)
        if failure:
            print(f"a failure: status {failure.status}, error {json.dumps(failure.error)}")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
