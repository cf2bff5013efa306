"""Where adapters come from, and the manager's own copy of each.

Sources:
- a folder under one of the configured roots (resolved, so ``..``, absolute
  paths elsewhere and symlinks that escape are refused);
- object storage, ``s3://`` or ``gs://``, through fsspec (s3fs, gcsfs);
- a Hugging Face hub repo, ``hf://<org>/<repo>``, where the network allows.

Registration copies the adapter's two files (``adapter_config.json``,
``adapter_model.safetensors``) into the store, hashing the weights on the way,
and validation runs on that copy: what is checked is what is served, and later
changes at the source change nothing. Nothing else from the source is copied,
so pickle files or scripts never reach the store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from serve_app.adapters.validation import CONFIG_FILE, WEIGHTS_FILE
from serve_app.locations import resolve as resolve_path
from serve_app.protocol.errors import InvalidAdapter, InvalidRequest

OBJECT_SCHEMES = ("s3://", "gs://")
HUB_SCHEME = "hf://"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_CHUNK = 1 << 20
STAGING_PREFIX = ".staging-"
# A staging folder of another host (a shared volume) is left alone this long.
FOREIGN_STAGING_S = 3600.0


def _staging_prefix() -> str:
    """Staging folders carry their owner (host, pid), so a restarted manager knows which are dead."""
    return f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


class AdapterStore:
    """The manager's copies: ``<root>/<name>/<sha256>/``, written once, never edited."""

    def __init__(
        self,
        root: str | Path,
        source_roots: list[str],
        *,
        max_bytes: int,
        storage_options: dict[str, dict[str, Any]] | None = None,
        allow_hub: bool = False,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._source_roots = [Path(resolve_path(r)).resolve() for r in source_roots]
        self._max_bytes = max_bytes
        self._storage_options = storage_options or {}
        self._allow_hub = allow_hub

    def path(self, name: str, sha256: str) -> Path:
        return self.root / name / sha256

    # -- fetching a source into a staging folder ------------------------------

    def _local_source(self, source: str) -> Path:
        raw = source.removeprefix("file://")
        try:
            path = Path(resolve_path(raw))
        except ValueError as e:  # a devmodel: source that names no artifact, or leaves its folder
            raise InvalidRequest(f"source {source!r}: {e}", param="source") from None
        if not path.is_absolute():
            raise InvalidRequest(f"source {source!r}: give an absolute path under an allowed root", param="source")
        real = path.resolve()
        if not any(real == root or root in real.parents for root in self._source_roots):
            raise InvalidAdapter(f"source {source!r} is outside the allowed adapter roots", param="source")
        if not real.is_dir():
            raise InvalidRequest(f"source {source!r} is not a folder", param="source")
        return real

    def _check_listing(self, names: list[str], source: str) -> None:
        if any(n.endswith(PICKLE_SUFFIXES) for n in names) and WEIGHTS_FILE not in names:
            raise InvalidAdapter(
                f"source {source!r} has only pickle weights (.bin/.pt); only safetensors are accepted", param="source"
            )
        for needed in (CONFIG_FILE, WEIGHTS_FILE):
            if needed not in names:
                raise InvalidAdapter(f"source {source!r} has no {needed}", param="source")

    def _copy_local(self, src: Path, dst: Path, source: str) -> None:
        self._check_listing([p.name for p in src.iterdir()], source)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            f = (src / name).resolve()
            if not any(root in f.parents for root in self._source_roots):
                raise InvalidAdapter(f"source {source!r}: {name} links outside the allowed roots", param="source")
            if f.stat().st_size > self._max_bytes:
                raise InvalidAdapter(f"source {source!r}: {name} is larger than {self._max_bytes} bytes")
            shutil.copyfile(f, dst / name)

    def _copy_object_store(self, source: str, dst: Path) -> None:
        import fsspec

        protocol = source.split("://", 1)[0]
        try:
            fs, base = fsspec.core.url_to_fs(source, **self._storage_options.get(protocol, {}))
            entries = fs.ls(base.rstrip("/"), detail=True)
            listing = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in entries}
        except ImportError as e:
            raise InvalidRequest(f"source {source!r}: no filesystem for {protocol}:// is installed") from e
        except FileNotFoundError:
            raise InvalidRequest(f"source {source!r} does not exist", param="source") from None
        except Exception as e:
            raise InvalidRequest(f"source {source!r} could not be listed: {type(e).__name__}", param="source") from e
        self._check_listing(list(listing), source)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            info = listing[name]
            if (info.get("size") or 0) > self._max_bytes:
                raise InvalidAdapter(f"source {source!r}: {name} is larger than {self._max_bytes} bytes")
            fs.get_file(info["name"], str(dst / name))

    def _copy_hub(self, source: str, dst: Path) -> None:
        if not self._allow_hub:
            raise InvalidRequest("hub sources are disabled on this server (adapters.allow_hub)", param="source")
        from huggingface_hub import hf_hub_download, list_repo_files

        repo = source[len(HUB_SCHEME) :]
        try:
            self._check_listing(list_repo_files(repo), source)
            for name in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copyfile(hf_hub_download(repo, name), dst / name)
        except InvalidAdapter:
            raise
        except Exception as e:
            raise InvalidRequest(f"source {source!r} could not be fetched: {type(e).__name__}", param="source") from e

    def stage(self, source: str) -> tuple[Path, str, int]:
        """Copy ``source`` into a new staging folder; return it, the weights' sha256 and size."""
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=self.root))
        try:
            if source.startswith(OBJECT_SCHEMES):
                self._copy_object_store(source, staging)
            elif source.startswith(HUB_SCHEME):
                self._copy_hub(source, staging)
            elif "://" in source and not source.startswith("file://"):
                raise InvalidRequest(f"source {source!r}: unsupported scheme", param="source")
            else:
                self._copy_local(self._local_source(source), staging, source)
            weights = staging / WEIGHTS_FILE
            size = weights.stat().st_size
            if size > self._max_bytes:
                raise InvalidAdapter(f"source {source!r}: weights are larger than {self._max_bytes} bytes")
            return staging, sha256_file(weights), size
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def commit(self, staging: Path, name: str, sha256: str) -> Path:
        """Move a validated staging folder to its final place (idempotent)."""
        final = self.path(name, sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.rename(final)
        return final

    def sweep(self, live: set[tuple[str, str]]) -> list[Path]:
        """Remove what a registration killed midway left behind; return what went.

        Staging folders of dead processes of this host (a manager killed while
        copying or validating), and stored copies no registry row points at,
        older than a staging folder could be (killed between the move into
        place and the registry write). Nothing here was ever listed or served:
        a registry row is written only after its copy is complete and in place.
        """
        gone: list[Path] = []
        host = f"{STAGING_PREFIX}{socket.gethostname()}-"
        now = time.time()
        for child in self.root.iterdir():
            if not child.name.startswith(STAGING_PREFIX) or not child.is_dir():
                continue
            if child.name.startswith(host):
                pid = child.name[len(host) :].split("-", 1)[0]
                dead = pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))
            else:
                dead = now - child.stat().st_mtime > FOREIGN_STAGING_S
            if dead:
                shutil.rmtree(child, ignore_errors=True)
                gone.append(child)
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            for copy in folder.iterdir():
                if (folder.name, copy.name) not in live and now - copy.stat().st_mtime > FOREIGN_STAGING_S:
                    shutil.rmtree(copy, ignore_errors=True)
                    gone.append(copy)
        return gone

    def remove(self, name: str, keep: str | None = None) -> None:
        """Drop ``name``'s copies (all, or all but the ``keep`` sha256)."""
        folder = self.root / name
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.name != keep:
                shutil.rmtree(child, ignore_errors=True)
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    def read(self, name: str, sha256: str) -> dict[str, bytes]:
        folder = self.path(name, sha256)
        return {n: (folder / n).read_bytes() for n in (CONFIG_FILE, WEIGHTS_FILE)}

    def sizes(self, name: str, sha256: str) -> dict[str, int]:
        """The files of a stored copy and their sizes."""
        folder = self.path(name, sha256)
        return {n: (folder / n).stat().st_size for n in (CONFIG_FILE, WEIGHTS_FILE)}

    def read_chunk(self, name: str, sha256: str, fname: str, offset: int, length: int) -> bytes:
        """``length`` bytes of one stored file from ``offset`` (fewer at its end)."""
        if fname not in (CONFIG_FILE, WEIGHTS_FILE):
            raise InvalidRequest(f"no file {fname!r} in an adapter", param="file")
        with (self.path(name, sha256) / fname).open("rb") as f:
            f.seek(offset)
            return f.read(length)
