"""The adapter registry, the store's source rules and the admin check, without Ray."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import pytest

from serve_app.adapters.registry import AdapterRecord, Registry
from serve_app.protocol.errors import InvalidAdapter, InvalidRequest, RouteNotFound


def _rec(name: str, sha: str = "a" * 64, **kw) -> AdapterRecord:
    return AdapterRecord(
        name=name,
        base_model="m",
        source=f"/src/{name}",
        sha256=sha,
        rank=8,
        alpha=16.0,
        target_modules=["q_proj"],
        size_bytes=10,
        **kw,
    )


def test_put_get_list_delete_and_versions(tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    assert reg.version() == 0 and reg.list() == []
    a = reg.put(_rec("a"))
    assert a.version == 1 and a.created_at > 0 and a.ref == "a@" + "a" * 16
    b = reg.put(_rec("a", sha="b" * 64))  # re-register: new version and ref, same creation time
    assert b.version == 2 and b.created_at == a.created_at and b.ref != a.ref
    assert [r.name for r in reg.list()] == ["a"] and reg.get("a").sha256 == "b" * 64
    assert reg.delete("a") and not reg.delete("a") and reg.get("a") is None
    assert reg.version() == 3


def test_survives_a_new_process(tmp_path):
    path = tmp_path / "r.sqlite3"
    Registry(path).put(_rec("kept"))
    code = f"from serve_app.adapters.registry import Registry; print(Registry({str(path)!r}).get('kept').sha256)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "a" * 64


def test_concurrent_registrations_from_threads_and_processes(tmp_path):
    path = tmp_path / "r.sqlite3"
    reg = Registry(path)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: reg.put(_rec(f"t{i}")), range(40)))
    code = (
        "import sys; from serve_app.adapters.registry import Registry, AdapterRecord; r = Registry(sys.argv[1]);"
        "[r.put(AdapterRecord(name=f'p{sys.argv[2]}-{i}', base_model='m', source='s', sha256='c'*64, rank=8,"
        " alpha=1.0)) for i in range(20)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(k)]) for k in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert len(reg.list()) == 100 and reg.version() == 100


@pytest.fixture()
def store(tmp_path, devmodel_dir):
    from serve_app.adapters.store import AdapterStore

    root = tmp_path / "allowed"
    root.mkdir()
    import shutil

    shutil.copytree(devmodel_dir / "adapters" / "pirate", root / "pirate")
    outside = tmp_path / "outside"
    shutil.copytree(devmodel_dir / "adapters" / "pirate", outside)
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    (root / "file-link").mkdir()
    (root / "file-link" / "adapter_config.json").symlink_to(outside / "adapter_config.json")
    shutil.copy(outside / "adapter_model.safetensors", root / "file-link")
    return AdapterStore(tmp_path / "store", [str(root)], max_bytes=1 << 20), root


def test_store_copies_only_the_two_files_and_hashes(store):
    st, root = store
    (root / "pirate" / "evil.py").write_text("import os")
    staging, sha, size = st.stage(str(root / "pirate"))
    assert sorted(p.name for p in staging.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert len(sha) == 64 and size == (root / "pirate" / "adapter_model.safetensors").stat().st_size
    final = st.commit(staging, "pirate", sha)
    assert st.read("pirate", sha)["adapter_model.safetensors"] == (final / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize(
    "source, error",
    [
        ("{root}/../outside", InvalidAdapter),
        ("/etc", InvalidAdapter),
        ("{root}/link-out", InvalidAdapter),  # symlinked folder escaping the root
        ("{root}/file-link", InvalidAdapter),  # symlinked file escaping the root
        ("relative/dir", InvalidRequest),
        ("ftp://x/y", InvalidRequest),
        ("hf://org/repo", InvalidRequest),  # hub sources are off unless allowed
        ("{root}/nope", InvalidRequest),
        # The dev model's own scheme: a 400 that names the source, never a 500.
        ("devmodel:../../etc", InvalidRequest),
        ("devmodel:adapters/../../../etc", InvalidRequest),
        ("devmodel:/etc", InvalidRequest),
        ("devmodel:", InvalidRequest),
    ],
)
def test_store_refuses_sources(store, source, error):
    st, root = store
    with pytest.raises(error) as err:
        st.stage(source.format(root=root))
    assert err.value.param == "source" or error is InvalidAdapter
    assert not [p for p in st.root.iterdir() if p.name.startswith(".staging")]  # nothing left behind


def test_store_size_limit(store, tmp_path):
    from serve_app.adapters.store import AdapterStore

    _, root = store
    small = AdapterStore(tmp_path / "small", [str(root)], max_bytes=100)
    with pytest.raises(InvalidAdapter, match="larger than"):
        small.stage(str(root / "pirate"))


def test_admin_check():
    from serve_app.protocol.errors import Unauthorized
    from serve_app.router.admin import check_admin

    with pytest.raises(RouteNotFound):
        check_admin(None, "Bearer anything")  # no key configured: the routes do not exist
    for header in (None, "", "Bearer wrong", "Basic secret", "secret"):
        with pytest.raises(Unauthorized):
            check_admin("secret", header)
    check_admin("secret", "Bearer secret")
    check_admin("secret", "bearer  secret ")


def test_inference_key_on_admin_routes_is_forbidden(monkeypatch):
    from serve_app.api.auth import KeyRing
    from serve_app.protocol.errors import Forbidden, Unauthorized
    from serve_app.router.admin import check_admin

    monkeypatch.setenv("TEST_KEYS", "inference-key-1")
    ring = KeyRing("TEST_KEYS")
    with pytest.raises(Forbidden):
        check_admin("admin-secret", "Bearer inference-key-1", ring)
    with pytest.raises(Unauthorized):
        check_admin("admin-secret", "Bearer other-key-22", ring)
    check_admin("admin-secret", "Bearer admin-secret", ring)


def test_bootstrap_file_of_the_repo():
    from serve_app.adapters.manager import bootstrap_entries

    names = [e["name"] for e in bootstrap_entries("adapters/registry.yaml")]
    assert names == ["pirate", "terse"]


def test_sweep_removes_only_what_a_killed_registration_left(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from serve_app.adapters.store import AdapterStore

    st = AdapterStore(tmp_path / "store", [str(tmp_path)], max_bytes=1 << 20)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    old = 1_000_000_000  # 2001: older than any registration could take

    def make(rel: str, mtime: float | None = None):
        p = st.root / rel
        p.mkdir(parents=True)
        (p / "adapter_model.safetensors").write_bytes(b"x")
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        return p

    gone = [
        make(f".staging-{host}-{dead.pid}-abc"),  # its manager was killed while copying
        make(".staging-elsewhere-1-old", old),  # another host's, long abandoned
        make("pirate/" + "b" * 64, old),  # moved into place, registry row never written
    ]
    kept = [
        make(f".staging-{host}-{os.getpid()}-mine"),  # a registration running now
        make(".staging-elsewhere-1-new"),  # another host's, maybe still running
        make("pirate/" + "a" * 64, old),  # registered
        make("pirate/" + "c" * 64),  # just moved into place: its row may be on its way
    ]
    assert sorted(st.sweep({("pirate", "a" * 64)})) == sorted(gone)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in gone)
