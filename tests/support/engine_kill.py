"""Kill a replica's vLLM engine under load and record what every client got, second by second.

Used by the integration tier (``test_faults.py``) and by hand against a
running server (the fault table in the docs comes from it)::

    python -m tests.support.engine_kill --url http://127.0.0.1:8000 [--replica-pid PID]

Load: ``streams`` long streams that start before the kill, and a new short
request every ``interval_s`` from start to end, each recorded by the time it
was sent. The kill is ``kill -9`` of the ``VLLM::EngineCore`` process under one
replica actor: how a CUDA error or the OOM killer ends an engine, the replica
actor living on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil

CAPITALS = [{"role": "user", "content": "Name the european capitals"}]
ENGINE_CORE = "EngineCor"  # /proc/<pid>/comm keeps 15 characters of VLLM::EngineCore


def engine_core_of(replica_pid: int) -> psutil.Process:
    """The EngineCore process under a replica actor's process."""
    cores = [p for p in psutil.Process(replica_pid).children(recursive=True) if ENGINE_CORE in p.name()]
    if len(cores) != 1:
        raise RuntimeError(f"expected one EngineCore under pid {replica_pid}, found {cores}")
    return cores[0]


def replica_pids(deployment: str) -> list[int]:
    """Pids of this machine's Serve replica actors of ``deployment`` (their process title names it)."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(p.info["cmdline"] or [])
        if title.startswith("ray::ServeReplica:") and f":{deployment}" in title:
            out.append(p.pid)
    return sorted(out)


@dataclass
class Outcome:
    """One request: when it was sent (seconds from the kill), how it ended, how long it took."""

    sent: float
    kind: str  # "stream" (started before the kill) or "new"
    status: str = ""  # "200", "503", ..., or a transport error's name
    end: str = ""  # done | in-band <code> | no finish | http <status> | transport <error>
    retry_after: str | None = None
    seconds: float = 0.0
    tokens: int = 0


@dataclass
class Timeline:
    outcomes: list[Outcome] = field(default_factory=list)
    killed_at: float = 0.0

    def new(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "new"]

    def failed_new(self) -> list[Outcome]:
        return [o for o in self.new() if o.sent >= 0 and o.end != "done"]

    def first_success_after_kill(self) -> float | None:
        ok = [o.sent + o.seconds for o in self.new() if o.sent >= 0 and o.end == "done"]
        return min(ok) if ok else None

    def table(self) -> str:
        """Per second after the kill: how the requests sent in it ended (and the longest wait)."""
        rows = ["  t(s)  sent  endings                               max wait(s)"]
        by_second: dict[int, list[Outcome]] = {}
        for o in self.new():
            by_second.setdefault(int(o.sent // 1), []).append(o)
        for second in sorted(by_second):
            group = by_second[second]
            ends = Counter(o.end if o.end != "done" else "200" for o in group)
            text = ", ".join(f"{k} x{v}" for k, v in sorted(ends.items()))
            rows.append(f"  {second:>4}  {len(group):>4}  {text:<38} {max(o.seconds for o in group):>6.1f}")
        refused = [o for o in self.new() if o.status in ("429", "503")]
        waits = Counter(o.retry_after for o in refused)
        rows.append(f"  429/503 by Retry-After: {dict(waits) if refused else 'none refused'}")
        streams = Counter(o.end for o in self.outcomes if o.kind == "stream")
        rows.append(f"  streams in flight at the kill: {dict(streams)}")
        first = self.first_success_after_kill()
        rows.append(f"  first success after the kill: {'none' if first is None else f'{first:.1f} s'}")
        return "\n".join(rows)


async def _one(client: httpx.AsyncClient, url: str, model: str, out: Outcome, t0: float, max_tokens: int) -> None:
    body = {"model": model, "messages": CAPITALS, "stream": True, "max_tokens": max_tokens}
    if out.kind == "stream":
        body["ignore_eos"] = True
    start = time.monotonic()
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            out.status = str(r.status_code)
            out.retry_after = r.headers.get("retry-after")
            if r.status_code != 200:
                await r.aread()
                out.end = f"http {r.status_code}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    out.end = out.end or "no finish"
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    out.end = f"in-band {chunk['error']['code']}"
                    continue
                out.tokens += 1
                if any(c.get("finish_reason") for c in chunk.get("choices", [])):
                    out.end = "done"
    except httpx.HTTPError as e:
        out.status = out.status or type(e).__name__
        out.end = f"transport {type(e).__name__}"
    finally:
        out.seconds = time.monotonic() - start


async def run(
    url: str,
    kill: Callable[[], None],
    *,
    models: list[str],
    streams: int = 4,
    interval_s: float = 0.25,
    before_s: float = 3.0,
    after_s: float = 30.0,
    timeout_s: float = 120.0,
    headers: dict[str, str] | None = None,
) -> Timeline:
    """Load, the kill ``before_s`` after the streams started, ``after_s`` more of new requests; all ended."""
    timeline = Timeline()
    async with httpx.AsyncClient(
        timeout=timeout_s, limits=httpx.Limits(max_connections=256), headers=headers
    ) as client:
        tasks = []
        t0 = time.monotonic()
        for i in range(streams):
            out = Outcome(sent=0.0, kind="stream")
            timeline.outcomes.append(out)
            tasks.append(asyncio.create_task(_one(client, url, models[i % len(models)], out, t0, 1500)))
        deadline = time.monotonic() + 60
        while not all(o.tokens for o in timeline.outcomes) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        start = time.monotonic()
        killed = start + before_s
        end = killed + after_s
        i = 0
        while (now := time.monotonic()) < end:
            if now >= killed and not timeline.killed_at:
                kill()
                timeline.killed_at = now
            out = Outcome(sent=now - killed, kind="new")
            timeline.outcomes.append(out)
            tasks.append(asyncio.create_task(_one(client, url, models[i % len(models)], out, killed, 16)))
            i += 1
            await asyncio.sleep(interval_s)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout_s + 10)
    return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--deployment", default="LLMServer", help="whose replica's engine to kill")
    parser.add_argument("--replica-pid", type=int, help="the replica actor's pid (default: the first found)")
    parser.add_argument("--model", action="append", help="models to ask for (default: gpt-oss-20b)")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of new requests after the kill")
    args = parser.parse_args()
    pid = args.replica_pid or replica_pids(args.deployment)[0]
    core = engine_core_of(pid)
    print(f"replicas of {args.deployment}: {replica_pids(args.deployment)}; killing EngineCore {core.pid} of {pid}")
    timeline = asyncio.run(run(args.url, core.kill, models=args.model or ["gpt-oss-20b"], after_s=args.after))
    print(timeline.table())


if __name__ == "__main__":
    main()
