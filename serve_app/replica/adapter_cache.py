"""A replica host's local copies of adapters, fetched from the adapter manager.

One folder per ref (``name@sha256-prefix``) under ``adapters.replica_cache_dir``,
shared by every replica on the host. A copy is written to a staging folder,
its weights' sha256 checked against the registry's, then renamed into place,
so a half-written or tampered copy is never loaded.

Replicas on one host coordinate through file locks (``fcntl.flock``, released
by the kernel if a replica dies): publishing and pruning hold the cache's
exclusive lock, and a replica holds a shared lock on an entry from the moment
it starts loading it until the engine lets it go (``hold``). Pruning keeps
the ``entries`` most recently used folders and never removes one that any
replica holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serve_app.adapters.validation import NAME_RE, WEIGHTS_FILE
from serve_app.protocol.errors import InvalidAdapter, ModelNotFound

_REF_RE_TAIL = "0123456789abcdef"
_LOCKS = ".locks"


def check_ref(ref: str) -> tuple[str, str]:
    """``name@hex`` -> (name, hex); anything else is an unknown model."""
    name, sep, prefix = ref.partition("@")
    if not sep or not NAME_RE.match(name) or not prefix or any(c not in _REF_RE_TAIL for c in prefix):
        raise ModelNotFound(f"adapter {ref!r} is not registered", param="model")
    return name, prefix


def engine_lora_id(path: str) -> int:
    """vLLM's id for a checked copy of an adapter, the same in every engine client of one engine.

    Derived from the copy's path (its folder is the ref, ``name@sha256-prefix``),
    not counted per process: the API processes of a gang share one engine, and
    two of them must neither give one adapter two ids nor two adapters one
    (odds of a clash between two refs: one in 2**31).
    """
    digest = hashlib.sha256(path.encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (2**31 - 2)


class Hold:
    """A shared lock on one cache entry: while open, no replica prunes it."""

    def __init__(self, path: Path):
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def close(self) -> None:
        """Idempotent."""
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None


class AdapterCache:
    def __init__(self, root: str | Path, entries: int):
        self.root = Path(root)
        (self.root / _LOCKS).mkdir(parents=True, exist_ok=True)
        self._entries = entries

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self.root / _LOCKS / "cache.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def hold(self, ref: str) -> Hold:
        """Keep ``ref`` from being pruned (by any replica on the host) until the Hold is closed."""
        check_ref(ref)
        return Hold(self.root / _LOCKS / f"{ref}.lock")

    def lookup(self, ref: str) -> Path | None:
        path = self.root / ref
        if path.is_dir():
            os.utime(path)  # most recently used
            return path
        return None

    def staging(self) -> Path:
        """A fresh folder to write a copy into, then ``publish`` (or ``discard``)."""
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    @staticmethod
    def discard(staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def publish(self, ref: str, sha256: str, staging: Path) -> Path:
        """Check a written copy's sha256 and move it into place; prune beyond the bound."""
        try:
            for f in staging.iterdir():
                if f.name.startswith(".") or not f.is_file():
                    raise InvalidAdapter(f"adapter {ref!r}: unexpected file {f.name!r}")
            if _sha256(staging / WEIGHTS_FILE) != sha256:
                raise InvalidAdapter(
                    f"adapter {ref!r}: its weights do not match the registered sha256 (corrupted copy); refused"
                )
            final = self.root / ref
            with self._exclusive():
                if final.exists():
                    shutil.rmtree(staging)
                    os.utime(final)
                else:
                    staging.rename(final)
                self._prune(keep=ref)
        except BaseException:
            self.discard(staging)
            raise
        return final

    def put(self, ref: str, sha256: str, files: dict[str, bytes]) -> Path:
        """Write ``files`` and publish them (small adapters, tests)."""
        staging = self.staging()
        for fname, data in files.items():
            if "/" in fname or fname.startswith("."):
                self.discard(staging)
                raise InvalidAdapter(f"adapter {ref!r}: unexpected file {fname!r}")
            (staging / fname).write_bytes(data)
        return self.publish(ref, sha256, staging)

    def _prune(self, keep: str) -> None:
        """Least recently used first, skipping entries a replica holds. Call under the exclusive lock."""
        entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        excess = len(entries) - self._entries
        if excess <= 0:
            return
        entries.sort(key=lambda p: p.stat().st_mtime)
        for p in entries:
            if excess <= 0:
                break
            if p.name == keep or not self._try_remove(p):
                continue
            excess -= 1

    def _try_remove(self, entry: Path) -> bool:
        lock = self.root / _LOCKS / f"{entry.name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a replica is loading or serving it
        else:
            shutil.rmtree(entry, ignore_errors=True)
            return True
        finally:
            os.close(fd)

    def age_of(self, ref: str) -> float:
        path = self.root / ref
        return time.time() - path.stat().st_mtime if path.exists() else float("inf")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
