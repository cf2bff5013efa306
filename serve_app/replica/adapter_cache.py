"""A replica host's local copies of adapters, fetched from the adapter manager.

One folder per ref (``name@sha256-prefix``) under ``adapters.replica_cache_dir``.
A copy is written to a temporary folder, its weights' sha256 checked against
the registry's, then renamed into place, so a half-written or tampered copy is
never loaded. The cache keeps the most recently used ``entries`` folders.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from serve_app.adapters.validation import NAME_RE, WEIGHTS_FILE
from serve_app.protocol.errors import InvalidAdapter, ModelNotFound

_REF_RE_TAIL = "0123456789abcdef"


def check_ref(ref: str) -> tuple[str, str]:
    """``name@hex`` -> (name, hex); anything else is an unknown model."""
    name, sep, prefix = ref.partition("@")
    if not sep or not NAME_RE.match(name) or not prefix or any(c not in _REF_RE_TAIL for c in prefix):
        raise ModelNotFound(f"adapter {ref!r} is not registered", param="model")
    return name, prefix


class AdapterCache:
    def __init__(self, root: str | Path, entries: int):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._entries = entries

    def lookup(self, ref: str) -> Path | None:
        path = self.root / ref
        if path.is_dir():
            os.utime(path)  # most recently used
            return path
        return None

    def put(self, ref: str, sha256: str, files: dict[str, bytes], keep: set[str]) -> Path:
        """Write, check and publish a copy; prune the least recently used beyond the bound."""
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            for fname, data in files.items():
                if "/" in fname or fname.startswith("."):
                    raise InvalidAdapter(f"adapter {ref!r}: unexpected file {fname!r}")
                (staging / fname).write_bytes(data)
            got = hashlib.sha256((staging / WEIGHTS_FILE).read_bytes()).hexdigest()
            if got != sha256:
                raise InvalidAdapter(
                    f"adapter {ref!r}: its weights do not match the registered sha256 (corrupted copy); refused"
                )
            final = self.root / ref
            if final.exists():
                shutil.rmtree(staging)
            else:
                staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._prune(keep | {ref})
        return final

    def _prune(self, keep: set[str]) -> None:
        entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(entries) <= self._entries:
            return
        entries.sort(key=lambda p: p.stat().st_mtime)
        for p in entries[: len(entries) - self._entries]:
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def age_of(self, ref: str) -> float:
        path = self.root / ref
        return time.time() - path.stat().st_mtime if path.exists() else float("inf")
