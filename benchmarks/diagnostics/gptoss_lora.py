"""LoRA on the gpt-oss dev model: registration to first token, and tokens/s by adapter kind.

    .venv/bin/python benchmarks/diagnostics/gptoss_lora.py [--concurrency 8] [--requests 64] [--json out.json]

Starts a local Ray Serve from configs/dev-cpu-gptoss.yaml with a fresh adapter
store (its bootstrap registers the dev adapters: ``pirate`` on attention +
experts, ``terse`` on experts only), makes an attention-only and an
attention+experts adapter with peft (tests/integration/peft_reference.py),
and measures through HTTP:

1. registration -> first streamed token of a never-seen gpt-oss adapter
   (attention + experts): the POST, then its first request (fetch from the
   manager, checks, engine load, prefill), three fresh names;
2. output tokens/s (and TTFT) at the given concurrency, 64 forced output
   tokens, for the base model, attention-only, attention+experts and
   experts-only adapters (benchmarks/loadgen.py, one mix at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
ADMIN_KEY = "bench-admin-key"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the european capitals"},
]
KINDS = {"base": None, "attention only": "attn", "attention + experts": "pirate", "experts only": "terse"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _first_token_s(client, url: str, model: str) -> float:
    body = {"model": model, "messages": MESSAGES, "stream": True, "max_tokens": 16}
    start = time.perf_counter()
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"choices":[{' in line:
                return time.perf_counter() - start
    raise RuntimeError(f"{model}: the stream ended without a token")


async def _register(client, url: str, name: str, source: Path) -> None:
    r = await client.post(
        url + "/v1/adapters",
        json={"name": name, "source": str(source)},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    r.raise_for_status()


async def _cold_starts(url: str, source: Path) -> list[dict]:
    import httpx

    out = []
    async with httpx.AsyncClient(timeout=300) as client:
        for i in range(3):
            t0 = time.perf_counter()
            await _register(client, url, f"cold{i}", source)
            t1 = time.perf_counter()
            # The router learns of it within adapters.refresh_s; its admin call refreshes at once.
            first = await _first_token_s(client, url, f"gpt-oss-20b:cold{i}")
            out.append(
                {"register_ms": 1000 * (t1 - t0), "first_token_ms": 1000 * first, "total_ms": 1000 * (t1 - t0 + first)}
            )
        await _register(client, url, "attn", source.parent / "attn")
    return out


def _load(url: str, adapter: str | None, args) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    mix = ["--mix", "base"] if adapter is None else ["--mix", "uniform", "--adapters", adapter]
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "loadgen.py"),
            "--url",
            url,
            "--model",
            "gpt-oss-20b",
            *mix,
            "--concurrency",
            str(args.concurrency),
            "--requests",
            str(args.requests),
            "--json",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = json.loads(out.read_text())
    return rows[0] if isinstance(rows, list) else rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.devmodel.paths import default_dir

    tmp = Path(tempfile.mkdtemp(prefix="gptoss-lora-bench-"))
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/integration/peft_reference.py"),
            str(default_dir() / "gptoss"),
            str(tmp / "made"),
        ],
        check=True,
    )
    shutil.copytree(default_dir() / "adapters" / "gptoss-pirate", tmp / "made" / "pirate-copy")
    cfg = yaml.safe_load((REPO / "configs" / "dev-cpu-gptoss.yaml").read_text())["applications"][0]["args"]
    cfg["adapters"].update(
        store_dir=str(tmp / "store"),
        replica_cache_dir=str(tmp / "cache"),
        source_roots=["devmodel:adapters", str(tmp / "made")],
    )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["SERVE_APP_ADMIN_KEY"] = ADMIN_KEY
    port = _free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    results: dict = {}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg), name="bench", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        results["cold"] = asyncio.run(_cold_starts(url, tmp / "made" / "pirate-copy"))
        results["load"] = {kind: _load(url, adapter, args) for kind, adapter in KINDS.items()}
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        "\n| registration -> first token (cold gpt-oss adapter, attention + experts) | register ms | first token ms "
        "| total ms |\n|---|---:|---:|---:|"
    )
    for i, c in enumerate(results["cold"]):
        print(f"| try {i + 1} | {c['register_ms']:.0f} | {c['first_token_ms']:.0f} | {c['total_ms']:.0f} |")
    print(
        f"\n| gpt-oss dev model, c={args.concurrency}, 64 output tokens | out tok/s | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms |\n|---|---:|---:|---:|---:|"
    )
    for kind, row in results["load"].items():
        print(
            f"| {kind} | {row['tok_s']:.1f} | {row['ttft_p50_ms']:.0f} | {row['ttft_p99_ms']:.0f} "
            f"| {row['itl_p50_ms']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
