"""Inference keys, tenants' adapter sets, CORS and error headers, without Ray."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from serve_app.api import auth
from serve_app.api.auth import ANONYMOUS, KeyRing, Principal, parse_keys
from serve_app.protocol.errors import Overloaded, Unauthorized
from serve_app.router.cors import Cors

TENANTS = f"""
- key: sk-acme-0123456789
  name: acme
  adapters: ["acme-*", shared]
- key_sha256: {hashlib.sha256(b"sk-globex-0123456789").hexdigest()}
  name: globex
  adapters: [globex-support]
- key: sk-ops-0123456789
  name: ops
"""


def test_no_keys_means_open(monkeypatch):
    monkeypatch.delenv("TEST_KEYS", raising=False)
    ring = KeyRing("TEST_KEYS")
    assert not ring.enabled
    assert ring.authenticate(None) is ANONYMOUS
    assert ring.authenticate("Bearer whatever") is ANONYMOUS


def test_comma_list_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEST_KEYS", "sk-first-123456, sk-second-123456")
    ring = KeyRing("TEST_KEYS")
    assert ring.authenticate("Bearer sk-second-123456").adapters is None
    for header in (None, "", "Bearer", "Bearer sk-first-12345", "Basic sk-first-123456", "sk-first-123456"):
        with pytest.raises(Unauthorized) as e:
            ring.authenticate(header)
        assert e.value.status == 401 and e.value.headers() == {"WWW-Authenticate": "Bearer"}
        assert "sk-" not in e.value.message  # the answer never echoes a key


def test_tenants_from_a_secret_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_KEYS", raising=False)
    path = tmp_path / "keys.yaml"
    path.write_text(TENANTS)
    ring = KeyRing("TEST_KEYS", str(path))
    acme = ring.authenticate("Bearer sk-acme-0123456789")
    assert acme.name == "acme"
    assert acme.may_use("acme-legal") and acme.may_use("shared")
    assert not acme.may_use("globex-support") and not acme.may_use("shared-2")
    globex = ring.authenticate("Bearer sk-globex-0123456789")  # stored only as a digest
    assert globex.may_use("globex-support") and not globex.may_use("acme-legal")
    assert ring.authenticate("Bearer sk-ops-0123456789").may_use("anything")


def test_file_named_by_the_environment_and_reloaded(tmp_path, monkeypatch):
    path = tmp_path / "keys"
    path.write_text("sk-old-key-123456")
    monkeypatch.delenv("TEST_KEYS", raising=False)
    monkeypatch.setenv("TEST_KEYS_FILE", str(path))
    monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
    ring = KeyRing("TEST_KEYS")
    ring.authenticate("Bearer sk-old-key-123456")
    path.write_text("sk-new-key-123456")
    os.utime(path, (time.time() + 5, time.time() + 5))
    with pytest.raises(Unauthorized):
        ring.authenticate("Bearer sk-old-key-123456")
    ring.authenticate("Bearer sk-new-key-123456")
    # A broken rewrite keeps the keys in force rather than locking everyone out.
    path.write_text("- key: [not, a, key]")
    os.utime(path, (time.time() + 10, time.time() + 10))
    ring.authenticate("Bearer sk-new-key-123456")


def test_a_missing_key_file_fails_at_startup(tmp_path):
    with pytest.raises(ValueError, match="api_keys_file"):
        KeyRing("TEST_KEYS", str(tmp_path / "absent.yaml"))


@pytest.mark.parametrize(
    "text, error",
    [
        ("- {key: short}", r"\[0\]\.key"),
        ("- {key: sk-aaaaaaaaaa, key_sha256: ab}", "exactly one"),
        ("- {key_sha256: nothex}", "key_sha256"),
        ("- {key: sk-aaaaaaaaaa, adapters: acme}", "adapters"),
        ("- {key: sk-aaaaaaaaaa, tenant: x}", "unknown"),
        ("[sk-aaaaaaaaaa, sk-aaaaaaaaaa]", "twice"),
        ("{a: b}", "expected"),
    ],
    ids=["short", "both", "digest", "adapters", "unknown", "dup", "mapping"],
)
def test_bad_key_specs_name_the_entry_not_the_key(text, error):
    with pytest.raises(ValueError, match=error) as e:
        parse_keys(text, "SRC")
    assert "sk-aaaaaaaaaa" not in str(e.value)


def test_principal_patterns():
    p = Principal("t", ("team-?", "exact"))
    assert p.may_use("team-a") and p.may_use("exact")
    assert not p.may_use("team-ab") and not p.may_use("exact2")
    assert not Principal("none", ()).may_use("anything")


def test_overloaded_carries_retry_after():
    e = Overloaded("busy")
    e.retry_after_s = 3
    assert e.status == 429 and e.headers() == {"Retry-After": "3"}


def test_cors_off_by_default_and_exact_when_on():
    off = Cors([])
    assert not off.enabled and not off.is_preflight("OPTIONS", {"access-control-request-method": "POST"})
    on = Cors(["https://app.example.com"])
    assert on.is_preflight("OPTIONS", {"access-control-request-method": "POST"})
    ok = on.preflight("https://app.example.com")
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert on.preflight("https://evil.example.com").status_code == 403
    assert "access-control-allow-origin" not in on.preflight(None).headers
    star = Cors(["*"])
    assert star.preflight("https://any.example.org").headers["access-control-allow-origin"] == "*"
