"""Where the dev model lives, without importing torch.

Configs name dev-model artifacts as ``devmodel:<artifact>`` (for example
``devmodel:base``) so the same YAML works whatever cache folder a machine uses.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DIR = "SERVE_APP_DEVMODEL_DIR"
SCHEME = "devmodel:"

# Sub-folders of a build; the builder writes exactly these.
ARTIFACTS = ("base", "gptoss", "adapters", "tiktoken")


def default_dir() -> Path:
    """The build folder: $SERVE_APP_DEVMODEL_DIR, else the user's cache dir."""
    if env := os.environ.get(ENV_DIR):
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return (Path(cache).expanduser() / "serve_app" / "devmodel").resolve()


def resolve(path: str) -> str:
    """Turn ``devmodel:<artifact>[/sub]`` into a real path; expand ``~`` and env vars otherwise."""
    if path.startswith(SCHEME):
        rel = path[len(SCHEME) :]
        parts = rel.split("/")
        if not rel or parts[0] not in ARTIFACTS:
            raise ValueError(f"unknown dev-model artifact {path!r}; expected one of {ARTIFACTS}")
        if any(p in ("..", ".") for p in parts) or "\\" in rel:
            raise ValueError(f"{path!r} leaves the dev-model folder; name a folder inside one of {ARTIFACTS}")
        return str(default_dir() / rel.rstrip("/"))
    return os.path.expanduser(os.path.expandvars(path))


def tiktoken_dir(root: Path | None = None) -> Path:
    """Folder holding ``o200k_base.tiktoken`` (for ``TIKTOKEN_ENCODINGS_BASE``)."""
    return (root or default_dir()) / "tiktoken"
