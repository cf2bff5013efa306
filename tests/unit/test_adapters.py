from __future__ import annotations

import pytest

from serve_app.protocol.errors import InvalidAdapter, ModelNotFound
from serve_app.adapters.validation import BaseShapes, check_name, resolve_in_root, validate_adapter
from tests.integration import malformed


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
    return validate_adapter(resolve_in_root(root, name), name, max_rank=max_rank, shapes=shapes, max_bytes=1 << 30)


def test_dev_adapter_accepted(root, shapes):
    spec = _validate(root, shapes, "terse")
    assert spec.rank == 8
    assert set(spec.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("name", sorted(malformed.BROKEN))
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


def test_missing_is_not_found(root):
    with pytest.raises(ModelNotFound):
        resolve_in_root(root, "nope")
