"""The benchmark's load generator: mixes, summaries, the ratio table (no server)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import loadgen


def test_mixes():
    assert loadgen.models_for("base", "m", ["a", "b"], "{base}:{adapter}", 3) == ["m"] * 3
    assert loadgen.models_for("uniform", "m", ["a", "b"], "{base}:{adapter}", 4) == ["m:a", "m:b", "m:a", "m:b"]
    skewed = loadgen.models_for("skewed", "m", ["a", "b", "c"], "{adapter}", 1000)
    assert 0.75 < skewed.count("a") / 1000 < 0.85 and {"b", "c"} <= set(skewed)
    with pytest.raises(ValueError):
        loadgen.models_for("zipf", "m", ["a"], "{adapter}", 1)


def test_summary_counts_errors_and_tokens():
    ok = [loadgen.Sample(ttft_s=0.1 * i, itl_s=0.01, e2e_s=1.0, tokens=64) for i in range(1, 11)]
    bad = [loadgen.Sample(e2e_s=0.5, error="http 429")]
    lv = loadgen.summarize("t", "base", 8, ok + bad, wall_s=2.0)
    assert lv.requests == 11 and lv.errors == 1 and lv.tok_s == 320.0
    assert 500 <= lv.ttft_p50_ms <= 600 and lv.ttft_p99_ms <= 1000
    text = loadgen.table([lv], {"t": {"peak_rss_mib": 123}})
    assert "peak_rss_mib" in text.splitlines()[0] and "| 123 |" in text
