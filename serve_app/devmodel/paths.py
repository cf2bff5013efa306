"""Where the dev model lives, without importing torch (the scheme itself: ``serve_app.locations``)."""

from __future__ import annotations

from pathlib import Path

from serve_app.locations import DEVMODEL_ARTIFACTS as ARTIFACTS
from serve_app.locations import DEVMODEL_ENV_DIR as ENV_DIR
from serve_app.locations import DEVMODEL_SCHEME as SCHEME
from serve_app.locations import devmodel_dir as default_dir
from serve_app.locations import resolve

__all__ = ["ARTIFACTS", "ENV_DIR", "SCHEME", "default_dir", "resolve", "tiktoken_dir"]


def tiktoken_dir(root: Path | None = None) -> Path:
    """Folder holding ``o200k_base.tiktoken`` (for ``TIKTOKEN_ENCODINGS_BASE``)."""
    return (root or default_dir()) / "tiktoken"
