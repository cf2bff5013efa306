"""`make bench`: this project vs. vLLM's own OpenAI server, same machine, same dev model.

    .venv/bin/python benchmarks/compare.py [--concurrency 1 8 32] [--output-tokens 64] [--json out.json]

Runs one server at a time (2 cores: they must not share the machine):

1. vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``)
   with the engine settings of ``configs/dev-cpu.yaml`` (the same
   ``engine_kwargs``) and ``--enable-lora --lora-modules pirate=... terse=...``.
   The dev model has no chat template of its own; vLLM gets one that yields
   exactly the Harmony prompt this project renders for the benchmark's
   messages, so both engines see the same prompt tokens.
2. This project: ``serve run`` of configs/dev-cpu.yaml (on a free port, with a
   scratch adapter store), which registers the same two adapters.

Each gets the same load (``benchmarks/loadgen.py``): base only and uniform over
the two adapters, at each concurrency, streaming, output forced with
``ignore_eos``. Memory is the peak, sampled every second, of the summed RSS
and PSS (RSS counts shared pages once per process; PSS splits them) of the
server's whole process tree (for Serve: driver, GCS, raylet, proxy, router,
manager, replica, engine core). The last lines are the ratios, ours / vLLM,
one per pair: ``ratio throughput c=32 base: 0.93`` (throughput: higher is
better for us; ttft: lower is better for us).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEV_CONFIG = REPO / "configs" / "dev-cpu.yaml"
ADAPTERS = ["pirate", "terse"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dev_args() -> dict:
    return yaml.safe_load(DEV_CONFIG.read_text())["applications"][0]["args"]


def harmony_template(cfg) -> tuple[str, int]:
    """A chat template whose output is this project's Harmony prompt for loadgen.MESSAGES."""
    from serve_app.harmony.chat import prepare
    from serve_app.harmony.encoding import harmony_encoding, use_vocab_dir
    from serve_app.protocol.openai import ChatCompletionRequest

    use_vocab_dir(cfg.model.resolved_vocab_dir())
    request = ChatCompletionRequest.model_validate({"model": cfg.model.served_name, "messages": loadgen.MESSAGES})
    prompt = prepare(request, cfg.sampling_defaults.reasoning_effort)
    text = harmony_encoding().decode(prompt.prompt_token_ids)
    return "{% raw %}" + text + "{% endraw %}", len(prompt.prompt_token_ids)


def vllm_command(cfg, port: int, template_path: Path) -> list[str]:
    from serve_app.devmodel import paths
    from serve_app.replica.engine import engine_kwargs

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port)]
    for key, value in engine_kwargs(cfg).items():
        if value is None or key in ("enable_log_requests",):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is False:
            if key == "enable_prefix_caching":
                cmd.append("--no-enable-prefix-caching")
        else:
            cmd += [flag, str(value)]
    adapters = Path(paths.resolve("devmodel:adapters"))
    cmd += ["--lora-modules", *[f"{a}={adapters / a}" for a in ADAPTERS], "--chat-template", str(template_path)]
    return cmd


class MemorySampler:
    """Peak summed RSS and PSS of a process and all its descendants."""

    def __init__(self, pid: int, interval_s: float = 1.0):
        import psutil

        self._root = psutil.Process(pid)
        self._interval_s = interval_s
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            rss = pss = 0
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", info.rss)
                except psutil.Error:
                    pass
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self._interval_s)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mib": round(self.peak_rss / 2**20), "peak_pss_mib": round(self.peak_pss / 2**20)}


def _wait_ready(url: str, proc: subprocess.Popen, want: set[str], timeout_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(f"{url}/v1/models", timeout=5)
            if r.status_code == 200 and want <= {m["id"] for m in r.json()["data"]}:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready in {timeout_s} s")


def _stop(proc: subprocess.Popen) -> None:
    """End the server's whole process tree: only what this script started.

    SIGINT first, so that ``serve run`` shuts Serve and its local Ray down.
    A shell runs background jobs with SIGINT ignored, and Ray actors and
    engine processes leave the process group (their own sessions), so whatever
    of the tree seen before the stop is still alive after it gets SIGKILL.
    """
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in tree:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(tree, timeout=10)


def run_target(name, cmd, env, url, want, template, args, log_path: Path) -> tuple[list, dict]:
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_ready(url, proc, want)
            import httpx

            r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
                "model": "gpt-oss-20b", "messages": loadgen.MESSAGES, "max_tokens": 4})
            print(f"{name}: ready; the benchmark prompt is {r.json()['usage']['prompt_tokens']} tokens",
                  file=sys.stderr)
            sampler = MemorySampler(proc.pid)
            levels = asyncio.run(
                loadgen.sweep(url, "gpt-oss-20b", ADAPTERS, template, ["base", "uniform"], args.concurrency,
                              args.output_tokens, args.requests, target=name)
            )
            return levels, sampler.stop()
        finally:
            _stop(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=0, help="per level; default max(4 * concurrency, 16)")
    p.add_argument("--only", choices=["vllm", "ours"], help="run one side (no ratios)")
    p.add_argument("--json")
    args = p.parse_args()
    # Run from a script's background job, SIGINT arrives ignored and the
    # servers would inherit that: give them (and us) the default handling back.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from serve_app.config import AppConfig

    base_args = _dev_args()
    cfg = AppConfig.model_validate(base_args)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
           "TIKTOKEN_ENCODINGS_BASE": cfg.model.resolved_vocab_dir() or os.environ.get("TIKTOKEN_ENCODINGS_BASE", "")}
    env.pop("SERVE_APP_API_KEYS", None)
    env.pop("SERVE_APP_API_KEYS_FILE", None)
    scratch = Path(tempfile.mkdtemp(prefix="serve-app-bench-"))
    results: dict[str, tuple[list, dict]] = {}

    if args.only in (None, "vllm"):
        template, prompt_tokens = harmony_template(cfg)
        (scratch / "harmony.jinja").write_text(template)
        port = _free_port()
        print(f"vLLM OpenAI server on :{port} (prompt: {prompt_tokens} tokens)", file=sys.stderr)
        results["vllm"] = run_target(
            "vllm", vllm_command(cfg, port, scratch / "harmony.jinja"), env, f"http://127.0.0.1:{port}",
            {"gpt-oss-20b", *ADAPTERS}, "{adapter}", args, scratch / "vllm.log",
        )
    if args.only in (None, "ours"):
        port = _free_port()
        doc = yaml.safe_load(DEV_CONFIG.read_text())
        doc["http_options"]["port"] = port
        app = doc["applications"][0]["args"]
        app["adapters"]["store_dir"] = str(scratch / "adapter-store")
        app["adapters"]["replica_cache_dir"] = str(scratch / "adapter-cache")
        (scratch / "serve.yaml").write_text(yaml.safe_dump(doc))
        print(f"this project (serve run) on :{port}", file=sys.stderr)
        serve = str(Path(sys.executable).parent / "serve")
        results["ours"] = run_target(
            "ours", [serve, "run", str(scratch / "serve.yaml")], env, f"http://127.0.0.1:{port}",
            {"gpt-oss-20b", *(f"gpt-oss-20b:{a}" for a in ADAPTERS)}, "{base}:{adapter}", args, scratch / "ours.log",
        )

    levels = [lv for name in ("vllm", "ours") if name in results for lv in results[name][0]]
    # Memory is per server (its whole process tree over the run), repeated on its rows.
    print(loadgen.table(levels, {name: mem for name, (_, mem) in results.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"levels": [asdict(lv) for lv in levels], "memory": {k: v[1] for k, v in results.items()}}, indent=1))
    print(f"(logs: {scratch})")
    if len(results) == 2:
        theirs = {(lv.mix, lv.concurrency): lv for lv in results["vllm"][0]}
        for lv in results["ours"][0]:
            ref = theirs[(lv.mix, lv.concurrency)]
            mix = "base" if lv.mix == "base" else "adapters"
            print(f"ratio throughput c={lv.concurrency} {mix}: {lv.tok_s / ref.tok_s:.2f}")
            print(f"ratio ttft c={lv.concurrency} {mix}: {lv.ttft_p50_ms / ref.ttft_p50_ms:.2f}")


if __name__ == "__main__":
    main()
