"""Adapter serving on the dev model: cold start, switching, throughput, affinity.

    .venv/bin/python benchmarks/diagnostics/adapters.py [--json]

Starts a local Ray Serve from configs/dev-cpu.yaml (engine LoRA slots raised
to 8 so 8 adapters fit) with a fresh adapter store, registers adapters over
the admin API, and measures through HTTP (the router) with streaming:

1. registration -> first token of a never-seen adapter: the POST, then the
   first streamed token of its first request (fetch, checks, engine load);
2. time to first token when every request switches adapter (two loaded
   adapters alternating) vs. the same adapter every time vs. the base model;
3. output tokens/s at concurrency 16, 8 adapters round-robin vs. base only
   (128 forced tokens per request);
4. with 2 replicas: the share of adapter requests that landed on a replica
   already holding the adapter (1 - engine loads / requests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the european capitals"},
]
ADMIN_KEY = "bench-admin-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _stream(client, url, model, tokens=32, ignore_eos=False):
    body = {
        "model": model,
        "messages": MESSAGES,
        "stream": True,
        "temperature": 0,
        "max_tokens": tokens,
        "ignore_eos": ignore_eos,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft, n = None, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            if ttft is None and ('"reasoning' in line or ('"content":"' in line and '"content":""' not in line)):
                ttft = time.perf_counter() - start
            if '"usage":{' in line:
                n = json.loads(line[6:])["usage"]["completion_tokens"]
    return ttft, n


async def _register(client, url, name, source):
    r = await client.post(
        url + "/v1/adapters", json={"name": name, "source": source}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    r.raise_for_status()
    return r.json()


def _args(store: str, cache: str, replicas: int) -> dict:
    args = yaml.safe_load((REPO / "configs" / "dev-cpu.yaml").read_text())["applications"][0]["args"]
    args["lora"].update(max_loras=8, max_cpu_loras=8)
    args["engine"]["max_num_seqs"] = 32
    args["adapters"] = {
        "store_dir": store,
        "replica_cache_dir": cache,
        "source_roots": ["devmodel:adapters"],
        "refresh_s": 0.5,
    }
    args["replica"]["autoscaling"] = {"min_replicas": replicas, "max_replicas": replicas}
    return args


async def _single_replica(client, url, adapters_src) -> dict:
    out: dict = {}
    # 1. registration -> first token
    cold = []
    for i in range(3):
        t0 = time.perf_counter()
        await _register(client, url, f"cold{i}", adapters_src + "/pirate")
        t1 = time.perf_counter()
        ttft, _ = await _stream(client, url, f"gpt-oss-20b:cold{i}")
        cold.append((1000 * (t1 - t0), 1000 * ttft, 1000 * (t1 - t0 + ttft)))
    out["cold"] = {
        k: statistics.median(c[i] for c in cold) for i, k in enumerate(("register_ms", "first_token_ms", "total_ms"))
    }
    # 2. switching between loaded adapters (both warm)
    for name in ("a0", "a1"):
        await _register(client, url, name, adapters_src + ("/pirate" if name == "a0" else "/terse"))
        await _stream(client, url, f"gpt-oss-20b:{name}")
    series = {
        "base": ["gpt-oss-20b"] * 20,
        "same adapter": ["gpt-oss-20b:a0"] * 20,
        "switching adapters": ["gpt-oss-20b:a0", "gpt-oss-20b:a1"] * 10,
    }
    out["switch"] = {}
    for label, models in series.items():
        ttfts = [(await _stream(client, url, m))[0] for m in models]
        out["switch"][label] = 1000 * statistics.median(ttfts)
    # 3. throughput at concurrency 16
    for i in range(2, 8):
        await _register(client, url, f"a{i}", adapters_src + ("/pirate" if i % 2 == 0 else "/terse"))
    names = [f"gpt-oss-20b:a{i}" for i in range(8)]
    out["throughput"] = {}
    for label, models in (("base only", ["gpt-oss-20b"] * 16), ("8 adapters round-robin", names * 2)):
        await asyncio.gather(*[_stream(client, url, m, 16, True) for m in models])  # warm-up
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = await asyncio.gather(*[_stream(client, url, m, 128, True) for m in models])
            rates.append(sum(n for _, n in res) / (time.perf_counter() - t0))
        out["throughput"][label] = statistics.median(rates)
    return out


async def main_async(args) -> dict:
    import httpx
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.devmodel.paths import resolve

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["SERVE_APP_ADMIN_KEY"] = ADMIN_KEY
    port = _free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    src = resolve("devmodel:adapters")
    results: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="adapter-bench-"))
    try:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=256)) as client:
            serve.run(build_app(_args(str(tmp / "s1"), str(tmp / "c1"), 1)), name="bench", route_prefix="/bench")
            results.update(await _single_replica(client, f"http://127.0.0.1:{port}/bench", src))
            serve.delete("bench")
            print("single-replica parts done", flush=True)
            serve.run(build_app(_args(str(tmp / "s2"), str(tmp / "c2"), 2)), name="bench2", route_prefix="/bench2")
            url = f"http://127.0.0.1:{port}/bench2"
            for i in range(8):
                await _register(client, url, f"r{i}", src + ("/pirate" if i % 2 == 0 else "/terse"))
            names = [f"gpt-oss-20b:r{i}" for i in range(8)]
            sent = 0
            for _ in range(args.affinity_rounds):
                await asyncio.gather(*[_stream(client, url, names[k % 8], 16) for k in range(16)])
                sent += 16
            loads = 0
            handle = serve.get_deployment_handle("LLMReplica", app_name="bench2")
            seen: dict[int, dict] = {}
            for _ in range(40):  # stats() lands on either replica; sample until both answered
                s = await handle.stats.remote()
                seen[s["pid"]] = s
                if len(seen) == 2:
                    break
            for s in seen.values():
                loads += sum(s["loads"].values())
            results["affinity"] = {
                "requests": sent,
                "engine_loads": loads,
                "replicas_seen": len(seen),
                "hit_share": 1 - loads / sent,
            }
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--affinity-rounds", type=int, default=8, help="rounds of 16 concurrent adapter requests")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = asyncio.run(main_async(args))
    c = r["cold"]
    print("\n| measurement | value |\n|---|---:|")
    print(f"| registration (POST /v1/adapters) | {c['register_ms']:.0f} ms |")
    print(
        f"| first token of its first request (fetch + checks + engine load + prefill) | {c['first_token_ms']:.0f} ms |"
    )
    print(f"| registration -> first token, total | {c['total_ms']:.0f} ms |")
    for label, v in r["switch"].items():
        print(f"| TTFT p50, c=1, {label} | {v:.1f} ms |")
    sw = r["switch"]
    print(
        f"| added TTFT when switching between loaded adapters (vs. same adapter) | "
        f"{sw['switching adapters'] - sw['same adapter']:+.1f} ms |"
    )
    for label, v in r["throughput"].items():
        print(f"| out tok/s, c=16, {label} | {v:.1f} |")
    t = r["throughput"]
    print(f"| adapters / base throughput | {t['8 adapters round-robin'] / t['base only']:.2f} |")
    a = r["affinity"]
    print(
        f"| 2 replicas: adapter requests on a replica already holding the adapter | {100 * a['hit_share']:.1f}% "
        f"({a['requests']} requests, {a['engine_loads']} engine loads, {a['replicas_seen']} replicas) |"
    )
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
