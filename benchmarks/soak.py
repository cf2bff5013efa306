"""`make soak`: a long mixed load on this project and on vLLM's own server; memory slope per process.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--concurrency 16] [--only ours|vllm]
        [--warmup-minutes 2] [--sample-s 20] [--json soak.json]

One server at a time (2 cores), each as ``make bench`` starts it
(``benchmarks/compare.py``: same config, same adapters, same CPU placement).
The load: ``concurrency`` clients, each sending one request after another for
``minutes``: streamed and plain chat completions in turn, over the base model
and every adapter, ``max_tokens`` tokens each (``ignore_eos``).

It prints, per minute: requests, errors (an HTTP error, an in-band error, a
transport failure), cut streams (a stream that ended without its tokens),
latency p50/p99; then, per process of the server's tree: RSS after warm-up and
at the end, and its growth per 1,000 requests and per 100k output tokens (a
least-squares slope over the samples after warm-up, so one sample's noise does
not decide it), and PSS at both ends (read twice only: reading it stalls the
process). A slope within noise of zero is a process that keeps nothing per
request.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
import cpu_roles
import loadgen

REPO = compare.REPO


@dataclass
class Done:
    """One finished request: when (seconds from the start), how long, how many tokens, how it ended."""

    at: float
    e2e_s: float
    tokens: int
    error: str | None
    cut: bool = False


@dataclass
class ProcMemory:
    """One process's RSS samples (MiB) against the requests and tokens done at each."""

    pid: int
    label: str
    role: str
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)  # (t, requests, tokens, rss MiB)
    pss_start_mib: float | None = None
    pss_end_mib: float | None = None

    def after(self, warmup_s: float) -> list[tuple[float, int, int, float]]:
        return [s for s in self.samples if s[0] >= warmup_s]

    def slope(self, warmup_s: float, per: str) -> float | None:
        """MiB per 1,000 requests (``per="requests"``) or per 100k tokens (``"tokens"``), after warm-up."""
        pts = self.after(warmup_s)
        if len(pts) < 3:
            return None
        xs = [(p[1] / 1000) if per == "requests" else (p[2] / 100_000) for p in pts]
        ys = [p[3] for p in pts]
        if max(xs) == min(xs):
            return None
        return statistics.linear_regression(xs, ys).slope


def _pss_mib(pid: int) -> float | None:
    import psutil

    try:
        info = psutil.Process(pid).memory_full_info()
        return getattr(info, "pss", info.rss) / 2**20
    except psutil.Error:
        return None


class Sampler:
    """Every ``interval_s``, the RSS of each process of the server's tree, with the load's counters."""

    def __init__(self, root_pid: int, root_role: str, interval_s: float, counters):
        self._root, self._root_role, self._interval = root_pid, root_role, interval_s
        self._counters = counters
        self.procs: dict[int, ProcMemory] = {}
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self):
        import psutil

        try:
            root = psutil.Process(self._root)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        import psutil

        now = time.monotonic() - self._t0
        requests, tokens = self._counters()
        for p in self._tree():
            try:
                rss = p.memory_info().rss / 2**20
                if p.pid not in self.procs:
                    cmd = " ".join(p.cmdline()) or p.name()
                    role = cpu_roles.role_of(cmd, p.pid == self._root, self._root_role)
                    self.procs[p.pid] = ProcMemory(p.pid, cpu_roles._label(cmd), role)
            except psutil.Error:
                continue
            self.procs[p.pid].samples.append((now, requests, tokens, rss))

    def pss(self, end: bool) -> None:
        for pid, pm in self.procs.items():
            value = _pss_mib(pid)
            if end:
                pm.pss_end_mib = value
            else:
                pm.pss_start_mib = value

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.sample()


async def _plain(session, url: str, model: str, tokens: int) -> tuple[int, str | None]:
    body = {
        "model": model,
        "messages": loadgen.MESSAGES,
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
    }
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                return 0, f"http {r.status}"
            return data["usage"]["completion_tokens"], None
    except Exception as e:  # counted, not raised: a soak counts failures
        return 0, type(e).__name__


async def load(url: str, models: list[str], concurrency: int, tokens: int, seconds: float, done: list[Done]) -> None:
    import aiohttp

    t0 = time.monotonic()
    deadline = t0 + seconds
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def client(i: int) -> None:
            turns = itertools.count(i)
            while time.monotonic() < deadline:
                n = next(turns)
                model = models[n % len(models)]
                start = time.monotonic()
                if n % 2 == 0:
                    s = await loadgen.one(session, url, model, tokens, {})
                    error, got = s.error, s.tokens
                else:
                    got, error = await _plain(session, url, model, tokens)
                cut = error is not None and (error.startswith("tokens") or error.startswith("in-band"))
                done.append(Done(start - t0, time.monotonic() - start, got, error, cut))

        await asyncio.gather(*(client(i) for i in range(concurrency)))


def per_minute(done: list[Done]) -> list[dict]:
    rows = []
    for minute, group in itertools.groupby(sorted(done, key=lambda d: d.at), key=lambda d: int(d.at // 60)):
        g = list(group)
        lat = sorted(d.e2e_s for d in g)
        rows.append(
            {
                "minute": minute + 1,
                "requests": len(g),
                "errors": sum(d.error is not None for d in g),
                "cut": sum(d.cut for d in g),
                "tokens": sum(d.tokens for d in g),
                "p50_ms": round(1000 * lat[len(lat) // 2]),
                "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]),
            }
        )
    return rows


def memory_rows(procs: dict[int, ProcMemory], warmup_s: float) -> list[dict]:
    rows = []
    for pm in sorted(procs.values(), key=lambda p: (p.role, p.label, p.pid)):
        pts = pm.after(warmup_s)
        if not pts:
            continue
        per_k, per_100k = pm.slope(warmup_s, "requests"), pm.slope(warmup_s, "tokens")
        rows.append(
            {
                "process": f"{pm.label} ({pm.pid})",
                "role": pm.role,
                "rss_after_warmup_mib": round(pts[0][3], 1),
                "rss_end_mib": round(pts[-1][3], 1),
                "mib_per_1k_requests": None if per_k is None else round(per_k, 2),
                "mib_per_100k_tokens": None if per_100k is None else round(per_100k, 2),
                "pss_start_mib": None if pm.pss_start_mib is None else round(pm.pss_start_mib, 1),
                "pss_end_mib": None if pm.pss_end_mib is None else round(pm.pss_end_mib, 1),
            }
        )
    return rows


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def soak_target(name: str, cmd, env, url: str, want: set[str], models: list[str], args, log_path: Path, **kw) -> dict:
    with open(log_path, "w") as log:
        proc = compare.spawn_server(cmd, env, log, kw.get("niceness", 0), kw.get("niceness", 0), kw.get("cpus"))
        try:
            compare._wait_ready(url, proc, want)
            compare._first_answer(url, proc)
            done: list[Done] = []
            counters = lambda: (len(done), sum(d.tokens for d in done))  # noqa: E731
            sampler = Sampler(proc.pid, "ingress" if name == "vllm" else "ray", args.sample_s, counters)
            sampler.start()
            warmup_s = args.warmup_minutes * 60
            pss_timer = threading.Timer(warmup_s, sampler.pss, kwargs={"end": False})
            pss_timer.start()
            print(f"{name}: soaking {args.minutes} min at c={args.concurrency}", file=sys.stderr)
            asyncio.run(load(url, models, args.concurrency, args.output_tokens, args.minutes * 60, done))
            pss_timer.cancel()
            sampler.stop()
            sampler.pss(end=True)
            return {
                "minutes": per_minute(done),
                "memory": memory_rows(sampler.procs, warmup_s),
                "requests": len(done),
                "errors": sum(d.error is not None for d in done),
                "cut": sum(d.cut for d in done),
                "tokens": sum(d.tokens for d in done),
            }
        finally:
            compare._stop(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=compare.DEV_CONFIG)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--warmup-minutes", type=float, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--sample-s", type=float, default=20)
    p.add_argument("--only", choices=["vllm", "ours"])
    p.add_argument("--ours-env", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--json")
    args = p.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from serve_app import cpu_placement
    from serve_app.config import AppConfig

    config = args.config if args.config.is_absolute() else REPO / args.config
    cfg = AppConfig.model_validate(compare._dev_args(config))
    adapters = list(compare.bootstrap_adapters(cfg))
    env = compare.server_env(cfg)
    scratch = Path(tempfile.mkdtemp(prefix="serve-app-soak-"))
    planned = cpu_placement.for_serve_config(config, env, os.sched_getaffinity(0))
    placement = planned if isinstance(planned, cpu_placement.CpuPlacement) else None
    results: dict[str, dict] = {}
    if args.only in (None, "vllm"):
        port = compare._free_port()
        results["vllm"] = soak_target(
            "vllm",
            compare.vllm_command(cfg, port, None),
            {**env, cpu_placement.BIND_ENV: placement.engine_bind} if placement else env,
            f"http://127.0.0.1:{port}",
            {"gpt-oss-20b", *adapters},
            ["gpt-oss-20b", *adapters],
            args,
            scratch / "vllm.log",
            niceness=compare.ray_worker_niceness(env),
            cpus=placement.frontend if placement else None,
        )
    if args.only in (None, "ours"):
        port = compare._free_port()
        doc = yaml.safe_load(config.read_text())
        doc["http_options"]["port"] = port
        app = doc["applications"][0]["args"]
        app["adapters"]["store_dir"] = str(scratch / "adapter-store")
        app["adapters"]["replica_cache_dir"] = str(scratch / "adapter-cache")
        (scratch / "serve.yaml").write_text(yaml.safe_dump(doc))
        named = [f"gpt-oss-20b:{a}" for a in adapters]
        results["ours"] = soak_target(
            "ours",
            [sys.executable, "-m", "serve_app.launch", str(scratch / "serve.yaml")],
            {**env, **dict(kv.split("=", 1) for kv in args.ours_env)},
            f"http://127.0.0.1:{port}",
            {"gpt-oss-20b", *named},
            ["gpt-oss-20b", *named],
            args,
            scratch / "ours.log",
        )
    for name, r in results.items():
        print(f"\n## {name}: {r['requests']} requests, {r['errors']} errors, {r['cut']} cut, {r['tokens']} tokens")
        print(_table(r["minutes"]))
        print()
        print(_table(r["memory"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args) | {"config": str(config)}, **results}, indent=1))
    print(f"(logs: {scratch})")


if __name__ == "__main__":
    main()
