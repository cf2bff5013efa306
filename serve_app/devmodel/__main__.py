"""``python -m serve_app.devmodel build [--out DIR] [--force] [--max-steps N]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.devmodel")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the tiny Harmony dev model and its adapters")
    b.add_argument("--out", type=Path, default=None, help="output folder (default: the user's cache dir)")
    b.add_argument("--force", action="store_true", help="rebuild even if the output is current")
    b.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="trial build: stop each training after N steps, verify nothing (needs --out)",
    )
    sub.add_parser("path", help="print the default build folder")
    args = parser.parse_args(argv)
    if args.command == "path":
        from serve_app.devmodel.paths import default_dir

        print(default_dir())
        return 0
    from serve_app.devmodel.build import build

    print(build(args.out, force=args.force, max_steps=args.max_steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
