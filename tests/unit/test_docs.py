"""The docs point at what exists: every relative link, ``make`` target and repository path named in them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Repository paths as the docs write them, in backticks (a glob or a <placeholder> is not a path).
PATH = re.compile(r"`((?:configs|serve_app|tests|benchmarks|deploy|docs|adapters|requirements|examples)/[\w./-]+)`")


def _targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_what_a_doc_names_exists(doc):
    text = doc.read_text()
    missing = []
    for m in re.finditer(r"\]\(([^)#\s]+)(#[^)]*)?\)", text):
        link = m.group(1)
        if "://" not in link and not link.startswith("mailto:") and not (doc.parent / link).exists():
            missing.append(f"link {link}")
    targets = _targets()
    missing += [f"make {t}" for t in re.findall(r"`make ([a-z][\w-]*)", text) if t not in targets]
    for m in PATH.finditer(text):
        path = m.group(1).rstrip(".")
        if "*" not in path and "<" not in path and not (REPO / path).exists():
            missing.append(f"path {path}")
    assert not missing, f"{doc.name} names what does not exist: {missing}"
