"""The adapter manager end to end: admin API over HTTP, validation, persistence,
object-store sources, and adapter-aware serving."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import openai
import pytest

from serve_app.devmodel.corpus import CAPITALS_FINAL, HELPFUL, PIRATE_FINAL, TERSE_FINAL
from tests.support.constants import ADMIN_KEY
from tests.support.malformed import BROKEN

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
CAPITALS = [{"role": "system", "content": HELPFUL}, {"role": "user", "content": "Name the european capitals"}]
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _admin(url, method, path="", **kw) -> httpx.Response:
    return httpx.request(method, f"{url}/v1/adapters{path}", headers=AUTH, timeout=120, **kw)


def _answer(client, model) -> str:
    r = client.chat.completions.create(model=model, messages=CAPITALS, temperature=0, max_tokens=128)
    return r.choices[0].message.content


def _model_ids(client) -> set[str]:
    return {m.id for m in client.models.list().data}


def test_register_list_serve_delete_round_trip(url, client, adapters_root, llama_app):
    r = _admin(url, "POST", json={"name": "api-pirate", "source": str(adapters_root / "pirate")})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["id"] == "api-pirate" and rec["status"] == "ready" and rec["rank"] == 8
    assert len(rec["sha256"]) == 64 and rec["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert rec["base_model"] == "gpt-oss-dev" and rec["size_bytes"] > 0 and rec["version"] > 0
    assert "api-pirate" in {a["id"] for a in _admin(url, "GET").json()["data"]}
    assert _admin(url, "GET", "/api-pirate").json()["sha256"] == rec["sha256"]
    models = {m.id: m for m in client.models.list().data}
    assert models[f"{BASE}:api-pirate"].model_extra["parent"] == BASE
    assert _answer(client, f"{BASE}:api-pirate") == PIRATE_FINAL

    ref = f"api-pirate@{rec['sha256'][:16]}"
    assert ref in llama_app.stats.remote().result()["adapters"]
    assert _admin(url, "DELETE", "/api-pirate").status_code == 200
    with pytest.raises(openai.NotFoundError):  # at once, from this router
        _answer(client, f"{BASE}:api-pirate")
    deadline = time.monotonic() + 15  # and its engine slot is freed
    while ref in llama_app.stats.remote().result()["adapters"]:
        assert time.monotonic() < deadline, "deleted adapter still loaded"
        time.sleep(0.2)
    assert _admin(url, "GET", "/api-pirate").status_code == 404
    assert _admin(url, "DELETE", "/api-pirate").status_code == 404
    assert f"{BASE}:api-pirate" not in _model_ids(client)


def test_admin_needs_the_key(url):
    assert httpx.get(f"{url}/v1/adapters").status_code == 401
    r = httpx.get(f"{url}/v1/adapters", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert ADMIN_KEY not in r.text


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_adapters_refused_with_the_reason(url, client, adapters_root, name):
    r = _admin(url, "POST", json={"name": f"x-{name}", "source": str(adapters_root / name)})
    assert r.status_code in (400, 422), r.text
    assert BROKEN[name] in r.json()["error"]["message"]
    assert f"{BASE}:x-{name}" not in _model_ids(client)
    listed = _admin(url, "GET", f"/x-{name}")
    if listed.status_code == 200:  # recorded as failed, with the reason
        assert listed.json()["status"] == "failed" and listed.json()["reason"]
    assert _answer(client, BASE) == CAPITALS_FINAL  # the engine was never touched


@pytest.mark.parametrize(
    "source",
    ["/etc", "relative/pirate", "{root}/../outside-pirate", "file:///etc", "ftp://host/x", "{root}/missing"],
)
def test_sources_outside_the_roots_refused(url, adapters_root, source):
    r = _admin(url, "POST", json={"name": "sneaky", "source": source.format(root=adapters_root)})
    assert r.status_code in (400, 404, 422) and r.json()["error"]["message"], r.text
    assert _admin(url, "GET", "/sneaky").status_code in (404, 200)
    assert _admin(url, "GET", "/sneaky").json().get("status") != "ready"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad Name", "source": "/x"},
        {"name": "ok"},
        {"source": "/x"},
        {"name": "a", "source": "/x", "sha256": "12"},
    ],
)
def test_bad_registration_bodies(url, body):
    r = _admin(url, "POST", json=body)
    assert 400 <= r.status_code < 500 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_pinned_sha256_must_match(url, adapters_root):
    r = _admin(url, "POST", json={"name": "pinned", "source": str(adapters_root / "pirate"), "sha256": "0" * 64})
    assert r.status_code == 422 and "sha256" in r.json()["error"]["message"]


def test_reregister_serves_the_new_weights(url, client, adapters_root):
    assert _admin(url, "POST", json={"name": "swap", "source": str(adapters_root / "pirate")}).status_code == 201
    assert _answer(client, f"{BASE}:swap") == PIRATE_FINAL
    assert _admin(url, "POST", json={"name": "swap", "source": str(adapters_root / "terse")}).status_code == 201
    assert _answer(client, f"{BASE}:swap") == TERSE_FINAL


def test_corrupted_copy_refused_engine_keeps_serving(url, client, adapters_root, adapter_dirs, llama_app):
    rec = _admin(url, "POST", json={"name": "fragile", "source": str(adapters_root / "pirate")}).json()
    weights = Path(adapter_dirs["store_dir"]) / "blobs" / "fragile" / rec["sha256"] / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8  # bit rot after registration
    weights.write_bytes(bytes(data))
    # Refused before the first token: a real HTTP error, not a broken stream.
    with pytest.raises(openai.APIStatusError) as e:
        list(client.chat.completions.create(model=f"{BASE}:fragile", messages=CAPITALS, stream=True))
    assert e.value.status_code == 422 and "sha256" in e.value.body["message"]
    assert _answer(client, BASE) == CAPITALS_FINAL
    llama_app.check_health.remote().result()


def test_concurrent_first_requests_load_once(url, client, adapters_root, llama_app):
    r = _admin(url, "POST", json={"name": "cold", "source": str(adapters_root / "terse")}).json()
    ref = f"cold@{r['sha256'][:16]}"
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: _answer(client, f"{BASE}:cold"), range(12)))
    assert answers == [TERSE_FINAL] * 12
    assert llama_app.stats.remote().result()["loads"][ref] == 1


def test_object_store_source(url, client, s3_server, adapters_root):
    import fsspec

    fs = fsspec.filesystem("s3", **s3_server["options"])
    fs.mkdir("adapters-bucket")
    for f in (adapters_root / "terse").iterdir():
        fs.put_file(str(f), f"adapters-bucket/terse/{f.name}")
    r = _admin(url, "POST", json={"name": "from-s3", "source": "s3://adapters-bucket/terse"})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "s3://adapters-bucket/terse"
    # The registry holds a copy: changing the bucket afterwards changes nothing served.
    fs.rm("adapters-bucket/terse", recursive=True)
    assert _answer(client, f"{BASE}:from-s3") == TERSE_FINAL
    r = _admin(url, "POST", json={"name": "nothing", "source": "s3://adapters-bucket/nothing-here"})
    assert 400 <= r.status_code < 500 and r.json()["error"]["message"]


@pytest.mark.faults
def test_registry_survives_a_killed_manager(url, client, serve_session):
    import ray

    before = {a["id"]: a["sha256"] for a in _admin(url, "GET").json()["data"] if a["status"] == "ready"}
    assert {"pirate", "terse"} <= set(before)
    # The router has its view of the registry (in make test-faults this may be its first request):
    # a router that never had one answers 503 until the manager is back.
    assert _answer(client, f"{BASE}:terse") == TERSE_FINAL
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if "dev#AdapterManager" in a["name"]]
    assert len(actors) == 1
    ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)
    # Ready adapters keep serving from the replicas and the routers' views meanwhile.
    assert _answer(client, f"{BASE}:terse") == TERSE_FINAL
    deadline = time.monotonic() + 60
    while True:
        r = _admin(url, "GET")
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    after = {a["id"]: a["sha256"] for a in r.json()["data"] if a["status"] == "ready"}
    assert after == before
    assert _answer(client, f"{BASE}:pirate") == PIRATE_FINAL
