"""`make bench`: this project vs. vLLM's own OpenAI server, same machine, same dev model.

    .venv/bin/python benchmarks/compare.py [--config configs/dev-cpu-gptoss.yaml] [--concurrency 1 8 32]
        [--output-tokens 64] [--only vllm|ours] [--ours-env KEY=VALUE ...] [--dashboard] [--json out.json]

Runs one server at a time (2 cores: they must not share the machine):

1. vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``),
   at the niceness Ray gives our processes (``ray_worker_niceness``), its
   session's scheduling group at the same niceness as ours (``set_session_niceness``),
   with the engine settings of the config (the same ``engine_kwargs``) and
   ``--lora-modules`` for the config's bootstrap adapters. On the gpt-oss dev
   model (the default) it runs in its gpt-oss mode, as a user would run it:
   its own Harmony rendering and the ``openai`` tool-call and
   ``openai_gptoss`` reasoning parsers. On the Llama-family dev model, which
   has no chat template, it gets one that yields exactly the Harmony prompt
   this project renders for the benchmark's messages.
2. This project as ``make serve`` runs it: ``serve run`` of the config
   through ``serve_app.launch`` (Ray without its dashboard; ``--dashboard``
   keeps it), on a free port, with a scratch adapter store, which registers
   the same adapters; ``--ours-env`` adds environment variables (Ray Serve's
   settings, to measure one at a time).

CPU per output token, by role (``benchmarks/cpu_roles.py``): each process of
the server's tree, CPU time over each level's measured requests divided by
the tokens they streamed. The data path is what is not the engine nor Ray's
own control processes: for vLLM its API server process; for this project the
HTTP ingress (Serve's proxy or haproxy), the Router and the LLMReplica actor.

Each gets the same load (``benchmarks/loadgen.py``): base only and uniform over
the two adapters, at each concurrency, streaming, output forced with
``ignore_eos``. Memory is the summed RSS (peak, sampled every second, from
a process of its own) and PSS (after the last level; reading it stalls the
server) of the server's whole process tree (RSS counts shared pages once per
process; PSS splits them) (for Serve: driver, GCS, raylet, proxy, router,
manager, replica, engine core). The last lines are the ratios, ours / vLLM,
one per pair: ``ratio throughput c=32 base: 0.93`` (throughput: higher is
better for us; ttft: lower is better for us), then ``cpu_per_token data_path:
<ours/vllm>`` over all levels and ``cpu_per_token busiest_process_us: <N>``,
our busiest data-path process.
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
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_roles
import loadgen

if TYPE_CHECKING:
    import httpx

REPO = Path(__file__).resolve().parents[1]
DEV_CONFIG = REPO / "configs" / "dev-cpu-gptoss.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dev_args(config: Path) -> dict:
    return yaml.safe_load(config.read_text())["applications"][0]["args"]


def bootstrap_adapters(cfg) -> dict[str, str]:
    """The config's bootstrap adapters: name -> directory."""
    from serve_app.devmodel import paths

    doc = yaml.safe_load((REPO / cfg.adapters.bootstrap).read_text())
    return {a["name"]: paths.resolve(a["source"]) for a in doc["adapters"]}


def is_gpt_oss(cfg) -> bool:
    return json.loads((Path(cfg.model.resolved_path()) / "config.json").read_text()).get("model_type") == "gpt_oss"


def harmony_template(cfg) -> tuple[str, int]:
    """A chat template whose output is this project's Harmony prompt for loadgen.MESSAGES."""
    from serve_app.endpoints.chat.models import ChatCompletionRequest
    from serve_app.endpoints.chat.render import prepare
    from serve_app.harmony.encoding import harmony_encoding, use_vocab_dir

    use_vocab_dir(cfg.model.resolved_vocab_dir())
    request = ChatCompletionRequest.model_validate({"model": cfg.model.served_name, "messages": loadgen.MESSAGES})
    prompt = prepare(request, cfg.sampling_defaults.reasoning_effort)
    text = harmony_encoding().decode(prompt.prompt_token_ids)
    return "{% raw %}" + text + "{% endraw %}", len(prompt.prompt_token_ids)


def vllm_command(cfg, port: int, template_path: Path | None) -> list[str]:
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
    cmd += ["--lora-modules", *[f"{name}={path}" for name, path in bootstrap_adapters(cfg).items()]]
    if template_path is None:  # gpt-oss mode: vLLM's own Harmony rendering and parsers
        cmd += ["--tool-call-parser", "openai", "--enable-auto-tool-choice", "--reasoning-parser", "openai_gptoss"]
    else:
        cmd += ["--chat-template", str(template_path)]
    return cmd


def _tree(root) -> list:
    import psutil

    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _sample_memory(pid: int, interval_s: float, stop, out) -> None:
    """The sampler's own process: peak summed RSS while the load runs, then PSS once, after it."""
    import psutil

    root = psutil.Process(pid)
    peak_rss = 0
    while not stop.is_set():
        rss = 0
        for p in _tree(root):
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        peak_rss = max(peak_rss, rss)
        stop.wait(interval_s)
    pss = 0
    for p in _tree(root):
        try:
            info = p.memory_full_info()
            pss += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    out.put((peak_rss, pss))


class MemorySampler:
    """Peak summed RSS of a process and all its descendants, and their PSS at the end.

    RSS (/proc/PID/statm) is cheap. PSS walks every mapping of every process
    (smaps), about 150 ms a pass over our 30-process tree, and it stalls the
    processes it reads: sampled once a second during the load (from a thread
    here, or from a process of its own alike), it gave our server 1.1-1.3 s
    TTFT p99 at c=1 (37-65 ms without it) and 570-590 ms p50 at c=8 (100
    without). So PSS is read once, after the last level; a server's memory
    does not shrink under this load.
    """

    def __init__(self, pid: int, interval_s: float = 1.0):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._out = ctx.Queue()
        self._proc = ctx.Process(target=_sample_memory, args=(pid, interval_s, self._stop, self._out), daemon=True)
        self._proc.start()

    def stop(self) -> dict:
        self._stop.set()
        peak_rss, pss = self._out.get(timeout=60)
        self._proc.join(timeout=10)
        return {"peak_rss_mib": round(peak_rss / 2**20), "peak_pss_mib": round(pss / 2**20)}


def server_env(cfg) -> dict[str, str]:
    """The environment both servers run in: no usage stats, Ray's auth off, the offline vocabulary, no API keys."""
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "TIKTOKEN_ENCODINGS_BASE": cfg.model.resolved_vocab_dir() or os.environ.get("TIKTOKEN_ENCODINGS_BASE", ""),
    }
    env.pop("SERVE_APP_API_KEYS", None)
    env.pop("SERVE_APP_API_KEYS_FILE", None)
    return env


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


def _first_answer(url: str, proc: subprocess.Popen, timeout_s: float = 600) -> httpx.Response:
    """The first chat answer, once the engine serves.

    Our router lists models before the engine replica is up, and answers a
    request in the meantime with 503 and Retry-After rather than hold it in
    Serve's queue (router.unavailable_wait_s): wait as a client would.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    body = {"model": "gpt-oss-20b", "messages": loadgen.MESSAGES, "max_tokens": 4}
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it answered")
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json=body)
        if r.status_code == 200:
            return r
        if r.status_code != 503 or time.monotonic() > deadline:
            raise RuntimeError(f"{url}: the first request got {r.status_code}: {r.text[:200]}")
        time.sleep(float(r.headers.get("retry-after", 1)))


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


def ray_worker_niceness(env: dict) -> int:
    """The niceness Ray starts actor processes at (``RAY_worker_niceness``, Ray's default 15).

    Our replica, its vLLM processes and haproxy run at it under ``serve run``;
    vLLM's server is started at it too. Where the kernel groups processes by
    session for scheduling (autogroup, on by default in most distributions),
    a process's niceness counts only against its own session: the load
    generator and each server are sessions of their own, so it is the
    session's niceness (``set_session_niceness``) that keeps the client,
    which shares the two cores, ahead of either server.
    """
    return int(env.get("RAY_worker_niceness", 15))


def session_group_niceness(pid: int) -> int | None:
    """The niceness of ``pid``'s autogroup, or None where it is in none.

    ``/proc/<pid>/autogroup`` reads ``/autogroup-12 nice 5``; it reads empty
    where the kernel schedules the process by a cgroup's group instead (autogroup
    off, or a container's CPU controller), and is missing without autogroup.
    """
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return parse_autogroup(f.read())
    except OSError:
        return None


def parse_autogroup(text: str) -> int | None:
    """The niceness in a ``/proc/<pid>/autogroup`` text; None for an empty one."""
    fields = text.split()
    if len(fields) == 3 and fields[0].startswith("/autogroup-") and fields[1] == "nice":
        return int(fields[2])
    return None


def set_session_niceness(pid: int, niceness: int) -> bool:
    """Give the scheduling group of ``pid``'s session (Linux autogroup) ``niceness``.

    Every process of that session, present and future, shares the group.
    Raising a niceness needs no privilege. False where the process is in no
    autogroup (niceness by process, as ``spawn_server`` sets it, is then what counts).
    """
    try:  # in no autogroup the write may succeed and change nothing: read it back
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(niceness))
    except OSError:
        return False
    return session_group_niceness(pid) == niceness


def spawn_server(
    cmd: list[str], env: dict, log, niceness: int = 0, session_niceness: int = 0, cpus: frozenset[int] | None = None
) -> subprocess.Popen:
    """A server in a session of its own (so that ``_stop`` can end its tree).

    Its first process runs at ``niceness`` and, given ``cpus``, on those CPUs
    only (its children inherit the mask; vLLM's CPU worker binds itself
    where ``VLLM_CPU_OMP_THREADS_BIND`` says); its session's scheduling group
    at ``session_niceness`` (``set_session_niceness``).
    """

    def setup() -> None:
        if niceness:
            os.nice(niceness)
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=setup if niceness or cpus else None,
    )
    if session_niceness and not set_session_niceness(proc.pid, session_niceness):
        print(f"(no session scheduling group for pid {proc.pid}: niceness by process only)", file=sys.stderr)
    return proc


def run_target(
    name,
    cmd,
    env,
    url,
    want,
    template,
    adapters,
    args,
    log_path: Path,
    niceness: int = 0,
    cpus: frozenset[int] | None = None,
) -> tuple[list, dict]:
    with open(log_path, "w") as log:
        # Both servers' sessions yield to the load generator alike.
        proc = spawn_server(cmd, env, log, niceness, session_niceness=ray_worker_niceness(env), cpus=cpus)
        try:
            _wait_ready(url, proc, want)
            r = _first_answer(url, proc)
            print(
                f"{name}: ready; the benchmark prompt is {r.json()['usage']['prompt_tokens']} tokens", file=sys.stderr
            )
            sampler = MemorySampler(proc.pid)
            root_role = "ingress" if name == "vllm" else "ray"  # vLLM's API server / the serve run driver

            def measure():
                before = cpu_roles.snapshot(proc.pid, root_role)
                waited = cpu_roles.run_queue_wait_s()  # this thread runs the load generator's event loop
                return lambda tokens: cpu_roles.Window.between(
                    before, cpu_roles.snapshot(proc.pid, root_role), tokens, cpu_roles.run_queue_wait_s() - waited
                )

            levels = asyncio.run(
                loadgen.sweep(
                    url,
                    "gpt-oss-20b",
                    adapters,
                    template,
                    ["base", "uniform"],
                    args.concurrency,
                    args.output_tokens,
                    args.requests,
                    target=name,
                    measure=measure,
                )
            )
            return levels, sampler.stop()
        finally:
            _stop(proc)


def cpu_table(levels: list) -> str:
    """CPU microseconds per output token by role, one row per server and level."""
    cols = ["ingress", "router", "replica", "data_path", "engine", "ray"]
    lines = [
        "| target | mix | c | "
        + " | ".join(f"{c} us/tok" for c in cols)
        + " | busiest data-path process | client wait ms |",
        "|" + "---|" * (len(cols) + 5),
    ]
    for lv in levels:
        w = lv.cpu
        cells = [f"{w.us_per_token(c):.0f}" for c in cols[:3]] + [f"{w.data_path_us():.0f}"]
        cells += [f"{w.us_per_token(c):.0f}" for c in cols[4:]]
        busy = w.busiest()
        who = f"{busy.name} {1e6 * busy.cpu_s / max(w.tokens, 1):.0f}" if busy else "-"
        waited = f"{1000 * w.client_wait_s:.0f}"
        lines.append(f"| {lv.target} | {lv.mix} | {lv.concurrency} | " + " | ".join(cells) + f" | {who} | {waited} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEV_CONFIG, help="a dev config (default: the gpt-oss one)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=0, help="per level; default max(4 * concurrency, 16)")
    p.add_argument("--only", choices=["vllm", "ours"], help="run one side (no ratios)")
    p.add_argument(
        "--ours-env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for serve run (Ray Serve settings)",
    )
    p.add_argument(
        "--api-processes",
        type=int,
        default=0,
        help="ours: API processes per engine (replica.api_processes; default: the config's)",
    )
    p.add_argument("--dashboard", action="store_true", help="ours with Ray's dashboard (make serve DASHBOARD=1)")
    p.add_argument(
        "--no-cpu-placement",
        action="store_true",
        help="both servers: every process's CPUs left to the OS (make serve CPU_PLACEMENT=0)",
    )
    p.add_argument("--json")
    args = p.parse_args()
    # Run from a script's background job, SIGINT arrives ignored and the
    # servers would inherit that: give them (and us) the default handling back.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from serve_app import cpu_placement
    from serve_app.config import AppConfig

    config = args.config if args.config.is_absolute() else REPO / args.config
    cfg = AppConfig.model_validate(_dev_args(config))
    adapters = list(bootstrap_adapters(cfg))
    env = server_env(cfg)
    scratch = Path(tempfile.mkdtemp(prefix="serve-app-bench-"))
    results: dict[str, tuple[list, dict]] = {}
    # vLLM's server gets the CPU placement make serve gives ours (serve_app.launch
    # places ours itself): like with like, as a vLLM user on CPU would place
    # it (its worker's binding variable, taskset for the rest).
    planned = (
        cpu_placement.Skipped("--no-cpu-placement")
        if args.no_cpu_placement
        else cpu_placement.for_serve_config(config, env, os.sched_getaffinity(0))
    )
    placement = planned if isinstance(planned, cpu_placement.CpuPlacement) else None
    print(f"both servers: {planned.describe()}", file=sys.stderr)

    if args.only in (None, "vllm"):
        template_path = None
        if not is_gpt_oss(cfg):
            template, _ = harmony_template(cfg)
            template_path = scratch / "harmony.jinja"
            template_path.write_text(template)
        port = _free_port()
        print(f"vLLM OpenAI server on :{port}", file=sys.stderr)
        results["vllm"] = run_target(
            "vllm",
            vllm_command(cfg, port, template_path),
            {**env, cpu_placement.BIND_ENV: placement.engine_bind} if placement else env,
            f"http://127.0.0.1:{port}",
            {"gpt-oss-20b", *adapters},
            "{adapter}",
            adapters,
            args,
            scratch / "vllm.log",
            niceness=ray_worker_niceness(env),
            cpus=placement.frontend if placement else None,
        )
    if args.only in (None, "ours"):
        port = _free_port()
        doc = yaml.safe_load(config.read_text())
        doc["http_options"]["port"] = port
        app = doc["applications"][0]["args"]
        app["adapters"]["store_dir"] = str(scratch / "adapter-store")
        app["adapters"]["replica_cache_dir"] = str(scratch / "adapter-cache")
        if args.api_processes:
            app["replica"]["api_processes"] = args.api_processes
        (scratch / "serve.yaml").write_text(yaml.safe_dump(doc))
        ours_env = {**env, **dict(kv.split("=", 1) for kv in args.ours_env)}
        print(f"this project (serve run) on :{port} {' '.join(args.ours_env)}", file=sys.stderr)
        launch = [sys.executable, "-m", "serve_app.launch", str(scratch / "serve.yaml")]
        launch += ["--dashboard"] if args.dashboard else []
        launch += ["--no-cpu-placement"] if args.no_cpu_placement else []
        results["ours"] = run_target(
            "ours",
            launch,
            ours_env,
            f"http://127.0.0.1:{port}",
            {"gpt-oss-20b", *(f"gpt-oss-20b:{a}" for a in adapters)},
            "{base}:{adapter}",
            adapters,
            args,
            scratch / "ours.log",
        )

    levels = [lv for name in ("vllm", "ours") if name in results for lv in results[name][0]]
    # Memory is per server (its whole process tree over the run), repeated on its rows.
    print(loadgen.table(levels, {name: mem for name, (_, mem) in results.items()}))
    print()
    print(cpu_table(levels))
    merged = {name: cpu_roles.merge([lv.cpu for lv in lvs]) for name, (lvs, _) in results.items()}
    if args.json:
        out = [{**asdict(lv), "cpu": lv.cpu.summary()} for lv in levels]
        Path(args.json).write_text(
            json.dumps(
                {
                    "levels": out,
                    "memory": {k: v[1] for k, v in results.items()},
                    "cpu": {k: w.summary() for k, w in merged.items()},
                    "ours_env": args.ours_env,
                    "api_processes": args.api_processes or cfg.replica.api_processes,
                    "cpu_placement": placement.describe() if placement else None,
                },
                indent=1,
            )
        )
    print(f"(logs: {scratch})")
    for name, w in merged.items():
        busy = w.busiest()
        print(
            f"cpu_per_token {name}: data path {w.data_path_us():.0f} us "
            f"({', '.join(f'{r} {w.us_per_token(r):.0f}' for r in cpu_roles.ROLES)}); busiest "
            f"{busy.name if busy else '-'}"
        )
    if len(results) == 2:
        theirs = {(lv.mix, lv.concurrency): lv for lv in results["vllm"][0]}
        for lv in results["ours"][0]:
            ref = theirs[(lv.mix, lv.concurrency)]
            mix = "base" if lv.mix == "base" else "adapters"
            print(f"ratio throughput c={lv.concurrency} {mix}: {lv.tok_s / ref.tok_s:.2f}")
            print(f"ratio ttft c={lv.concurrency} {mix}: {lv.ttft_p50_ms / ref.ttft_p50_ms:.2f}")
            print(f"ratio ttft_p99 c={lv.concurrency} {mix}: {lv.ttft_p99_ms / ref.ttft_p99_ms:.2f}")
        print(f"cpu_per_token data_path: {merged['ours'].data_path_us() / merged['vllm'].data_path_us():.2f}")
    if "ours" in merged:
        busy = merged["ours"].busiest()
        print(
            f"cpu_per_token busiest_process_us: {1e6 * busy.cpu_s / max(merged['ours'].tokens, 1):.0f}"
            if busy
            else "cpu_per_token busiest_process_us: -"
        )


if __name__ == "__main__":
    main()
