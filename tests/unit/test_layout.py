"""The house as docs/development.md draws it, kept so by the imports themselves.

- Endpoints stand on ``serve_app.api``; only the app's assembly (``serve_app.router``,
  ``serve_app.server``, ``serve_app.app``) knows the endpoints, so no two packages lean on
  each other.
- Production code never imports the dev-model package (its ``devmodel:`` scheme is
  resolved by ``serve_app.locations``), nor does anything but ``serve_app.replica``
  import vLLM.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "serve_app"
PRODUCTION = ["api", "endpoints", "router", "server", "replica", "adapters", "quotas", "config", "app", "locations"]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _modules(package: str) -> list[Path]:
    return sorted((PKG / package).rglob("*.py")) if (PKG / package).is_dir() else [PKG / f"{package}.py"]


def _offenders(packages: list[str], forbidden: str) -> list[str]:
    return [
        f"{p.relative_to(PKG.parent)} imports {m}"
        for package in packages
        for p in _modules(package)
        for m in sorted(_imports(p))
        if m == forbidden or m.startswith(forbidden + ".")
    ]


@pytest.mark.parametrize(
    "packages, forbidden",
    [
        (["endpoints", "api", "harmony", "protocol"], "serve_app.router"),
        (["api", "quotas", "harmony", "protocol"], "serve_app.endpoints"),
        (PRODUCTION, "serve_app.devmodel"),
        (
            ["api", "endpoints", "router", "server", "adapters", "quotas", "harmony", "protocol", "config", "app"],
            "vllm",
        ),
    ],
    ids=["endpoints-not-router", "api-not-endpoints", "no-devmodel", "vllm-in-replica-only"],
)
def test_imports_follow_the_layout(packages, forbidden):
    assert not _offenders(packages, forbidden)
