"""``serve run`` on one machine, with Ray's dashboard off unless asked for.

``python -m serve_app.launch CONFIG [--dashboard]`` is what ``make serve`` and
``make bench`` run: Serve's own ``serve run`` command, unchanged, after this
process has started the local Ray itself. ``serve run`` starts one with
``ray.init()``'s defaults, which include the dashboard (its head and nine
module processes), and has no flag to leave it out; it skips its own
``ray.init`` when Ray is already up. On the 2-core dev box those processes
take a few hundredths of a core at idle and more under load, all of it from
the engine (docs/benchmarks.md). Without the dashboard, Serve's metrics still
reach the metrics agent, but ``serve status``, ``serve config`` and the web
UI, which talk to the dashboard's REST API, do not answer: ``--dashboard``
(``make serve DASHBOARD=1``) keeps it. Clusters (``ray up``, KubeRay) start
Ray themselves and keep ``serve run`` / ``serve deploy`` as they are.

On a one-machine CPU deployment it also places the processes: vLLM's CPU
worker alone on its cores, everything else on the CPU vLLM reserves for
them (``serve_app.cpu_placement``); ``--no-cpu-placement``
(``make serve CPU_PLACEMENT=0``) leaves placement to the OS.

Ctrl-C goes to ``serve run``'s own handler (Serve shut down), then this
process's exit ends the local Ray it started, as ``serve run`` alone does.
"""

from __future__ import annotations

import argparse
import os
import sys

from serve_app import cpu_placement


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve_app.launch", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a Serve config file (configs/*.yaml)")
    parser.add_argument("--dashboard", action="store_true", help="start Ray's dashboard too (serve status, the web UI)")
    parser.add_argument(
        "--no-cpu-placement",
        action="store_true",
        help="leave every process's CPUs to the OS (by default, on CPU, vLLM's worker gets cores of its own)",
    )
    args = parser.parse_args(argv)

    if not args.no_cpu_placement:
        # Before Ray starts: its processes, and the engine's, inherit the mask and the environment.
        placement = cpu_placement.for_serve_config(args.config, os.environ, os.sched_getaffinity(0))
        if isinstance(placement, cpu_placement.CpuPlacement):
            cpu_placement.apply(placement)
        print(f"serve_app.launch: {placement.describe()}", file=sys.stderr)

    import ray
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.scripts import cli

    # What serve run's own ray.init would do, dashboard aside: Serve's namespace,
    # no address, so a Ray named by RAY_ADDRESS or left by `ray start` is joined
    # (and keeps its own dashboard: ray.init ignores the flag when joining).
    ray.init(namespace=SERVE_NAMESPACE, include_dashboard=args.dashboard)
    cli.main(["run", args.config], prog_name="serve", standalone_mode=False)


if __name__ == "__main__":
    main(sys.argv[1:])
