"""Run by `make install`: every requirement of serve-app (with the extras named) is installed.

`make install` installs the lock as it is, without resolving. A dependency
added to pyproject.toml without `make lock` fails here, by name, instead of
at import time.
"""

import importlib.metadata as md
import sys

from packaging.requirements import Requirement


def main(extras: list[str]) -> None:
    missing = []
    for spec in md.requires("serve-app") or []:
        req = Requirement(spec)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ["", *extras]):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            missing.append(str(req))
            continue
        if not req.specifier.contains(have, prereleases=True):
            missing.append(f"{req} (locked: {have})")
    if missing:
        sys.exit("not in requirements/cpu-dev.lock (run `make lock`): " + "; ".join(missing))


if __name__ == "__main__":
    main(sys.argv[1:])
