"""Plots of a `make bench` run: throughput and TTFT against concurrency, ours and vLLM's.

    .venv/bin/python benchmarks/plots.py BENCH.json OUT_DIR

Reads the JSON that ``compare.py --json`` writes and writes ``throughput.png``
and ``ttft.png`` (p50 solid, p99 dashed), one line per server and request mix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _series(levels: list[dict], key: str) -> dict[tuple[str, str], tuple[list[int], list[float]]]:
    out: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for lv in sorted(levels, key=lambda lv: lv["concurrency"]):
        xs, ys = out.setdefault((lv["target"], lv["mix"]), ([], []))
        xs.append(lv["concurrency"])
        ys.append(lv[key])
    return out


def plot(bench_json: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    levels = json.loads(bench_json.read_text())["levels"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (target, mix), (xs, ys) in _series(levels, "tok_s").items():
        ax.plot(xs, ys, marker="o", label=f"{target} {mix}")
    ax.set(xlabel="concurrent requests", ylabel="output tokens / s", title="Throughput", xscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(out_dir / "throughput.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    p50, p99 = _series(levels, "ttft_p50_ms"), _series(levels, "ttft_p99_ms")
    for name, (xs, ys) in p50.items():
        (line,) = ax.plot(xs, ys, marker="o", label=f"{name[0]} {name[1]} p50")
        ax.plot(*p99[name], marker="x", linestyle="--", color=line.get_color(), label=f"{name[0]} {name[1]} p99")
    ax.set(xlabel="concurrent requests", ylabel="ms", title="Time to first token", xscale="log", yscale="log")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    written.append(out_dir / "ttft.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return written


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for path in plot(Path(sys.argv[1]), Path(sys.argv[2])):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
