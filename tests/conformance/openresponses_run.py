"""``make conformance``: the Open Responses compliance suite against a live dev-model server.

    python tests/conformance/openresponses_run.py [--config configs/dev-cpu-gptoss.yaml] [--url URL]

The suite (``openresponses/``: its ``bin/compliance-test.ts`` and what it
imports, unchanged, from openresponses/openresponses at the commit in
``openresponses/PINNED``; Apache-2.0, ``openresponses/LICENSE``) runs on Bun.
Bun and zod come from the npm registry at the versions in
``openresponses-npm/package-lock.json`` (``npm ci``), into a cache folder
(``~/.cache/serve_app/openresponses/<lock digest>``, or ``$SERVE_APP_NPM_CACHE``),
never a global install; the suite is copied beside them.

Without ``--url``, this starts the server as ``make serve`` does (the config,
on a free port, with scratch stores; API keys unset; the reasoning stream
events under Open Responses' names, ``responses.reasoning_events``), waits for its first
answer, runs the suite, and stops the server. It prints the suite's lines and
its summary, writes the suite's JSON results (``--json``), and exits non-zero
if a test other than those in ``EXPECTED_FAILURES`` fails, or one of those
passes (the list is then out of date).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SUITE = Path(__file__).resolve().parent / "openresponses"
NPM = Path(__file__).resolve().parent / "openresponses-npm"
sys.path.insert(0, str(REPO / "benchmarks"))

import compare  # noqa: E402  (the server launch helpers make bench uses)

# gpt-oss is text-only: an image input gets a clear 400 naming the content part.
EXPECTED_FAILURES = {"image-input"}
MODEL = "gpt-oss-20b"


def runtime_dir() -> Path:
    """Bun and zod from the lock, installed once per lock into the cache (``npm ci``)."""
    lock = (NPM / "package-lock.json").read_bytes()
    root = Path(os.environ.get("SERVE_APP_NPM_CACHE", Path.home() / ".cache" / "serve_app" / "openresponses"))
    folder = root / hashlib.sha256(lock).hexdigest()[:16]
    if not (folder / "node_modules" / ".bin" / "bun").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NPM / name, folder / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts=false"],
            cwd=folder,
            check=True,
            env={**os.environ, "npm_config_cache": str(root / "npm-cache")},
        )
    # The suite beside its dependencies (Bun resolves zod from the importing file's folders up).
    shutil.rmtree(folder / "suite", ignore_errors=True)
    shutil.copytree(SUITE, folder / "suite")
    return folder


def run_suite(runtime: Path, base_url: str, out_json: Path | None) -> dict:
    """The suite's JSON report (``--json``): {"summary": {...}, "results": [...]}."""
    bun = runtime / "node_modules" / ".bin" / "bun"
    cmd = [str(bun), "run", "bin/compliance-test.ts", "--base-url", base_url, "--api-key", "sk-conformance"]
    done = subprocess.run([*cmd, "--model", MODEL, "--json"], cwd=runtime / "suite", capture_output=True, text=True)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"the suite printed no JSON: {done.stdout[-2000:]}{done.stderr[-2000:]}") from None
    if out_json is not None:
        out_json.write_text(json.dumps(report, indent=1))
    return report


def print_report(report: dict) -> None:
    """The suite's own lines: one per test, its errors, and its summary line."""
    marks = {"passed": "✓", "failed": "✗", "skipped": "○"}
    for r in report["results"]:
        print(f"{marks.get(r['status'], '?')} {r['name']} ({r.get('duration', 0)}ms)")
        for e in r.get("errors") or []:
            print(f"    - {e[:400]}")
    s = report["summary"]
    print(f"Results: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped, {s['total']} total")


def start_server(config: Path, scratch: Path) -> tuple[subprocess.Popen, str]:
    from serve_app.config import AppConfig

    port = compare._free_port()
    doc = yaml.safe_load(config.read_text())
    doc["http_options"]["port"] = port
    app = doc["applications"][0]["args"]
    app["adapters"]["store_dir"] = str(scratch / "adapter-store")
    app["adapters"]["replica_cache_dir"] = str(scratch / "adapter-cache")
    responses = app.setdefault("responses", {})
    responses["store_dir"] = str(scratch / "responses")
    # The suite validates event names against Open Responses' schema (docs/api.md).
    responses["reasoning_events"] = "open_responses"
    (scratch / "serve.yaml").write_text(yaml.safe_dump(doc))
    cfg = AppConfig.model_validate(app)
    log = open(scratch / "server.log", "w")  # the server's whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve_app.launch", str(scratch / "serve.yaml")],
        env=compare.server_env(cfg),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    compare._wait_ready(url, proc, {MODEL})
    compare._first_answer(url, proc)
    return proc, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/dev-cpu-gptoss.yaml")
    parser.add_argument("--url", help="a running server's base URL (without /v1); else one is started")
    parser.add_argument("--json", type=Path, help="write the suite's results here")
    args = parser.parse_args()

    runtime = runtime_dir()
    proc = None
    scratch = Path(tempfile.mkdtemp(prefix="openresponses-"))
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            t0 = time.monotonic()
            proc, url = start_server(REPO / args.config, scratch)
            print(f"server up in {time.monotonic() - t0:.0f} s at {url} (log: {scratch / 'server.log'})")
        t0 = time.monotonic()
        report = run_suite(runtime, f"{url}/v1", args.json)
        print_report(report)
        print(f"(the suite ran in {time.monotonic() - t0:.0f} s)")
    finally:
        if proc is not None:
            compare._stop(proc)
    results = report["results"]
    failed = {r["id"] for r in results if r["status"] == "failed"}
    passed = {r["id"] for r in results if r["status"] == "passed"}
    unexpected = failed - EXPECTED_FAILURES
    stale = EXPECTED_FAILURES & passed
    if unexpected:
        print(f"conformance: FAILED: {sorted(unexpected)} failed")
    if stale:
        print(f"conformance: FAILED: {sorted(stale)} passed; update EXPECTED_FAILURES")
    if not unexpected and not stale:
        print(f"conformance: OK ({len(passed)} passed; failed as expected: {sorted(failed) or 'none'})")
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
