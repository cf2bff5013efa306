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


def _model_folder(path, **overrides):
    import json

    path.mkdir(parents=True)
    cfg = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880, "vocab_size": 201088}
    (path / "config.json").write_text(json.dumps({**cfg, **overrides}))
    return path


def test_an_adapter_trained_on_a_local_copy_of_the_served_base_is_the_same_base(tmp_path):
    """peft writes the folder it trained on as base_model_name_or_path: the served folder, or a copy of it."""
    from serve_app.adapters.validation import same_base

    served = _model_folder(tmp_path / "served" / "gpt-oss-20b")
    names = frozenset({"openai/gpt-oss-20b", "gpt-oss-20b"})
    (tmp_path / "link").symlink_to(served)
    copy = _model_folder(tmp_path / "copy", torch_dtype="bfloat16")  # not an identity key
    other = _model_folder(tmp_path / "other", hidden_size=4096)
    assert same_base("gpt-oss-20b", names, str(served))
    assert same_base(str(served), names, str(served))
    assert same_base(f"{served}/", names, str(served))
    assert same_base(str(tmp_path / "link"), names, str(served))
    assert same_base(str(copy), names, str(served))
    assert not same_base(str(other), names, str(served))  # another size: refused
    assert not same_base("/nowhere/gpt-oss-20b", names, str(served))  # cannot be compared here: an alias admits it
    assert not same_base("meta-llama/Llama-3-8B", names, str(served))
    assert not same_base(None, names, str(served))
    assert not same_base(str(copy), names, "openai/gpt-oss-20b")  # a hub id serves no folder to compare with


def test_a_different_base_is_refused_with_the_way_to_admit_it(tmp_path):
    import json

    from serve_app.adapters.validation import validate_adapter

    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": "/home/alice/base"})
    )
    with pytest.raises(InvalidAdapter, match=r"trained for base model '/home/alice/base'.*lora\.base_model_names"):
        validate_adapter(adapter, "a", max_rank=8, shapes=None, max_bytes=1 << 20, base_models=frozenset({"m"}))


def test_the_dev_adapter_trained_on_the_served_folder_is_accepted(root, shapes, devmodel_dir, tmp_path):
    """The finding of issue 30: peft's base_model_name_or_path is the served folder's path, not a name."""
    import json
    import shutil

    copy = tmp_path / "terse"
    shutil.copytree(root / "terse", copy)
    cfg = json.loads((copy / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(devmodel_dir / "base")
    (copy / "adapter_config.json").write_text(json.dumps(cfg))
    names = frozenset({"gpt-oss-dev"})
    kw = dict(max_rank=8, shapes=shapes, max_bytes=1 << 30, base_models=names)
    assert validate_adapter(copy, "terse", base_dir=str(devmodel_dir / "base"), **kw).rank == 8
    with pytest.raises(InvalidAdapter, match="trained for base model"):
        validate_adapter(copy, "terse", base_dir=None, **kw)
