"""``make bench``'s plots are written from its JSON (throughput and TTFT, per server and mix)."""

from __future__ import annotations

import json

import pytest


def test_plots_from_bench_json(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.plots import plot

    levels = [
        {"target": t, "mix": m, "concurrency": c, "tok_s": 100.0 * c, "ttft_p50_ms": 50.0 * c, "ttft_p99_ms": 90.0 * c}
        for t in ("ours", "vllm")
        for m in ("base", "uniform")
        for c in (1, 8, 32)
    ]
    src = tmp_path / "bench.json"
    src.write_text(json.dumps({"levels": levels}))
    written = plot(src, tmp_path / "plots")
    assert [p.name for p in written] == ["throughput.png", "ttft.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in written)
