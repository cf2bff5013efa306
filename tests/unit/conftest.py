"""Unit-tier fixtures: no Ray, no engine.

``vocab_dir`` is all most unit tests need: the o200k vocabulary, extracted
from its wheel and checked (seconds). Tests that need the *trained* dev model
ask for ``devmodel_dir`` and are marked ``model`` here, so ``make test-unit``
(``-m "not model"``) never trains anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "devmodel_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """A verified ``o200k_base.tiktoken``, set as openai_harmony's vocabulary for this process."""
    from serve_app.devmodel.paths import default_dir, tiktoken_dir
    from serve_app.devmodel.vocab import ensure_vocab, use_vocab

    built = tiktoken_dir(default_dir())
    folder = built if built.is_dir() else Path.home() / ".cache" / "serve_app" / "vocab"
    ensure_vocab(folder)
    use_vocab(folder)
    return folder


@pytest.fixture(scope="session")
def devmodel_dir() -> Path:
    """The cached dev-model build (built here if missing or stale)."""
    from serve_app.devmodel.paths import default_dir

    subprocess.run([sys.executable, "-m", "serve_app.devmodel", "build"], check=True)
    return default_dir()


@pytest.fixture(scope="session")
def rendered_corpus(vocab_dir) -> list[dict]:
    """The dev corpus as the build records it (prompt and target tokens), rendered without training."""
    from serve_app.devmodel import corpus
    from serve_app.devmodel.build import _sample_json

    return [_sample_json(s, "base", None) for s in corpus.render(corpus.base_examples())]


@pytest.fixture(scope="module")
def fakes(vocab_dir, tmp_path_factory):
    """The router app on a fake replica and a real response store, one per test module
    (``tests/support/fake_router.py``): (client, replica, store)."""
    from tests.support.fake_router import router_app

    yield from router_app(vocab_dir, tmp_path_factory.mktemp("keys"))
