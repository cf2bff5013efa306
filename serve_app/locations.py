"""Where a config points: local paths (``~`` and environment variables expanded) and the
``devmodel:`` scheme, which names an artifact of the CPU dev model's build folder.

The scheme is resolved here, like any other location, so that the production
code that reads configs (the config models, the adapter store and manager)
never imports the dev-model package (``serve_app.devmodel``: torch, the
builder). Configs write ``devmodel:<artifact>`` (``devmodel:gptoss``) so that
one YAML works whatever cache folder a machine uses.
"""

from __future__ import annotations

import os
from pathlib import Path

DEVMODEL_ENV_DIR = "SERVE_APP_DEVMODEL_DIR"
DEVMODEL_SCHEME = "devmodel:"
# Sub-folders of a dev-model build; its builder writes exactly these.
DEVMODEL_ARTIFACTS = ("base", "gptoss", "adapters", "tiktoken")


def devmodel_dir() -> Path:
    """The dev model's build folder: $SERVE_APP_DEVMODEL_DIR, else the user's cache dir."""
    if env := os.environ.get(DEVMODEL_ENV_DIR):
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return (Path(cache).expanduser() / "serve_app" / "devmodel").resolve()


def resolve(path: str) -> str:
    """Turn ``devmodel:<artifact>[/sub]`` into a real path; expand ``~`` and env vars otherwise."""
    if path.startswith(DEVMODEL_SCHEME):
        rel = path[len(DEVMODEL_SCHEME) :]
        parts = rel.split("/")
        if not rel or parts[0] not in DEVMODEL_ARTIFACTS:
            raise ValueError(f"unknown dev-model artifact {path!r}; expected one of {DEVMODEL_ARTIFACTS}")
        if any(p in ("..", ".") for p in parts) or "\\" in rel:
            raise ValueError(f"{path!r} leaves the dev-model folder; name a folder inside one of {DEVMODEL_ARTIFACTS}")
        return str(devmodel_dir() / rel.rstrip("/"))
    return os.path.expanduser(os.path.expandvars(path))
