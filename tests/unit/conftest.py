from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def devmodel_dir() -> Path:
    """The cached dev-model build (built here if missing or stale)."""
    from serve_app.devmodel.paths import default_dir

    subprocess.run([sys.executable, "-m", "serve_app.devmodel", "build"], check=True)
    return default_dir()
