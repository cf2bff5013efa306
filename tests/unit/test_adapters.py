from __future__ import annotations

import pytest

from serve_app.adapters.validation import BaseShapes, check_name, validate_adapter
from serve_app.protocol.errors import InvalidAdapter, ModelNotFound
from tests.support import malformed


@pytest.fixture(scope="module")
def root(devmodel_dir, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("adapters")
    shutil.copytree(devmodel_dir / "adapters" / "terse", root / "terse")
    malformed.populate(root, devmodel_dir / "adapters" / "pirate", tmp_path_factory.mktemp("outside"))
    return root


@pytest.fixture(scope="module")
def shapes(devmodel_dir):
    return BaseShapes.from_model_dir(devmodel_dir / "base")


def _validate(root, shapes, name, max_rank=8):
    return validate_adapter(
        root / name, name, max_rank=max_rank, shapes=shapes, max_bytes=1 << 30, base_models=frozenset({"gpt-oss-dev"})
    )


def test_dev_adapter_accepted(root, shapes):
    spec = _validate(root, shapes, "terse")
    assert spec.rank == 8
    assert set(spec.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


# "escape" is a valid adapter behind a symlink: the store refuses it (test_adapter_registry).
@pytest.mark.parametrize("name", sorted(set(malformed.BROKEN) - {"escape"}))
def test_malformed_refused_with_reason(root, shapes, name):
    with pytest.raises(InvalidAdapter) as err:
        _validate(root, shapes, name)
    assert malformed.BROKEN[name] in err.value.message
    assert err.value.status == 422


def test_size_limit(root, shapes):
    with pytest.raises(InvalidAdapter, match="over the limit"):
        validate_adapter(root / "terse", "terse", max_rank=8, shapes=shapes, max_bytes=10)


@pytest.mark.parametrize("name", ["../x", "/etc", "UPPER", "", "a" * 65, "-lead", "sp ace"])
def test_bad_names(name):
    with pytest.raises(InvalidAdapter):
        check_name(name)


@pytest.mark.parametrize("ref", ["pirate", "pirate@", "pirate@XYZ", "../x@00", "@00", "Pirate@00"])
def test_bad_refs_are_not_found(ref):
    from serve_app.replica.adapter_cache import check_ref

    with pytest.raises(ModelNotFound):
        check_ref(ref)


def test_replica_cache_checks_sha256(tmp_path, root):
    import hashlib

    from serve_app.replica.adapter_cache import AdapterCache

    files = {n: (root / "terse" / n).read_bytes() for n in ("adapter_config.json", "adapter_model.safetensors")}
    sha = hashlib.sha256(files["adapter_model.safetensors"]).hexdigest()
    cache = AdapterCache(tmp_path, entries=2)
    with pytest.raises(InvalidAdapter, match="sha256"):
        cache.put("terse@00", "0" * 64, files)
    assert cache.lookup("terse@00") is None and _entries(tmp_path) == []
    for i in range(3):
        cache.put(f"t{i}@{sha[:16]}", sha, files)
    assert len(_entries(tmp_path)) == 2  # least recently used pruned


def _entries(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
