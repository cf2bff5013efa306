"""Inference API keys: who may call, and which adapters each caller may use.

Keys come from the environment (``SERVE_APP_API_KEYS`` by default) and/or a
secret file (``auth.api_keys_file``, or the file named by
``SERVE_APP_API_KEYS_FILE``), in either of two forms:

    SERVE_APP_API_KEYS="sk-one,sk-two"            # plain keys: every adapter

    # YAML (or JSON): a list of entries
    - key: sk-acme-...              # or key_sha256: <hex digest>, to keep no plaintext at rest
      name: acme                    # shown in logs instead of the key
      adapters: ["acme-*", shared]  # fnmatch patterns; left out: every adapter
      max_concurrent_requests: 4    # quotas (serve_app.quotas.limits), each optional
      tokens_per_minute: 20000

No key configured anywhere: inference is open (like ``vllm serve`` without
``--api-key``). Keys are kept only as SHA-256 digests and compared in constant
time against every configured digest, so neither the answer nor its timing
says which key came close. The secret file is re-read when it changes, so keys
rotate without a restart. Nothing here logs a key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serve_app.protocol.errors import Unauthorized
from serve_app.quotas.limits import FIELDS as QUOTA_FIELDS
from serve_app.quotas.limits import Quota, quota_of

logger = logging.getLogger("ray.serve")

FILE_ENV_SUFFIX = "_FILE"
RELOAD_CHECK_S = 5.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a name for logs, and the adapters it may use."""

    name: str
    # fnmatch patterns; None: every adapter.
    adapters: tuple[str, ...] | None = None
    # Its quota (None: none).
    quota: Quota | None = None

    def may_use(self, adapter: str) -> bool:
        return self.adapters is None or any(fnmatch.fnmatchcase(adapter, p) for p in self.adapters)


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True)
class ApiKey:
    digest: bytes
    principal: Principal


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """Keys from a comma list or a YAML/JSON list of entries; errors name the entry, never the key."""
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not valid YAML: {e.__class__.__name__}") from None
    if doc is None:
        return []
    if isinstance(doc, str):
        doc = [k.strip() for k in doc.split(",") if k.strip()]
    if not isinstance(doc, list):
        raise ValueError(f"{source}: expected a comma-separated list of keys or a list of entries")
    keys = [_entry(item, f"{source}[{i}]") for i, item in enumerate(doc)]
    names = [k.principal.name for k in keys]
    if len(set(k.digest for k in keys)) != len(keys):
        raise ValueError(f"{source}: the same key appears twice")
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: two entries share a name")
    return keys


def _entry(item: Any, where: str) -> ApiKey:
    if isinstance(item, str):
        return ApiKey(_checked_key(item, where), Principal(f"key-{where.rsplit('[', 1)[-1].rstrip(']')}"))
    if not isinstance(item, dict):
        raise ValueError(f"{where}: an entry is a key or a mapping with key, name, adapters and quotas")
    unknown = set(item) - {"key", "key_sha256", "name", "adapters", *QUOTA_FIELDS}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    if ("key" in item) == ("key_sha256" in item):
        raise ValueError(f"{where}: give exactly one of key, key_sha256")
    if "key" in item:
        dig = _checked_key(item["key"], where)
    else:
        hexd = str(item["key_sha256"]).lower()
        if not _HEX64.match(hexd):
            raise ValueError(f"{where}.key_sha256: not a SHA-256 hex digest")
        dig = bytes.fromhex(hexd)
    name = item.get("name") or f"key-{where.rsplit('[', 1)[-1].rstrip(']')}"
    if not isinstance(name, str):
        raise ValueError(f"{where}.name: must be a string")
    adapters = item.get("adapters")
    if adapters is not None:
        if not isinstance(adapters, list) or not all(isinstance(a, str) and a for a in adapters):
            raise ValueError(f"{where}.adapters: must be a list of adapter names or patterns")
        adapters = tuple(adapters)
    return ApiKey(dig, Principal(name, adapters, quota_of(item, where)))


def _checked_key(key: Any, where: str) -> bytes:
    if not isinstance(key, str) or len(key) < 8 or any(c.isspace() for c in key):
        raise ValueError(f"{where}.key: a key is a string of at least 8 characters without spaces")
    return digest(key)


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def matches(token: str | None, digests: list[bytes]) -> int | None:
    """Index of the digest ``token`` hashes to; every digest is compared, whatever matches."""
    if token is None:
        return None
    given = digest(token)
    found = None
    for i, d in enumerate(digests):
        if hmac.compare_digest(given, d) and found is None:
            found = i
    return found


class KeyRing:
    """The configured inference keys; ``authenticate`` maps a header to a Principal."""

    def __init__(self, env_name: str, file: str | None = None, quotas: bool = True):
        self._env_name = env_name
        self._file = file or os.environ.get(env_name + FILE_ENV_SUFFIX) or None
        # Whether quotas are counted (the app's QuotaKeeper): if not, a key that sets one is refused.
        self._quotas = quotas
        self._env_keys = self._parse(os.environ.get(env_name, ""), env_name)
        self._file_keys: list[ApiKey] = []
        self._mtime: float | None = None
        self._checked = time.monotonic()
        if self._file:
            self._load_file(strict=True)
        self._rebuild()

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def _rebuild(self) -> None:
        self._keys = self._env_keys + self._file_keys
        self._digests = [k.digest for k in self._keys]

    def _load_file(self, strict: bool) -> None:
        if self._file is None:
            return
        path = Path(self._file).expanduser()
        try:
            mtime = path.stat().st_mtime
            if mtime == self._mtime:
                return
            keys = self._parse(path.read_text(), str(path))
        except (OSError, ValueError) as e:
            if strict:
                raise ValueError(f"auth.api_keys_file: {e}") from None
            # Keep serving with the keys we had: a half-written file must not lock everyone out.
            logger.error("API key file not reloaded, keeping the previous keys: %s", e)
            return
        self._file_keys, self._mtime = keys, mtime
        self._rebuild()
        logger.info("API keys loaded: %d from %s", len(keys), path)

    def _parse(self, text: str, source: str) -> list[ApiKey]:
        keys = parse_keys(text, source)
        if not self._quotas:
            for k in keys:
                if k.principal.quota is not None:
                    raise ValueError(
                        f"{source}: {k.principal.name} sets a quota, but quotas are off (quotas.enabled: false)"
                    )
        return keys

    def _maybe_reload(self) -> None:
        if self._file and time.monotonic() - self._checked > RELOAD_CHECK_S:
            self._checked = time.monotonic()
            self._load_file(strict=False)

    def authenticate(self, authorization: str | None) -> Principal:
        self._maybe_reload()
        if not self._keys:
            return ANONYMOUS
        i = matches(bearer_token(authorization), self._digests)
        if i is None:
            raise Unauthorized("Incorrect or missing API key. Send it as Authorization: Bearer <key>.")
        return self._keys[i].principal

    def is_key(self, authorization: str | None) -> bool:
        """Whether the header carries one of the inference keys (not necessarily anything more)."""
        return self.enabled and matches(bearer_token(authorization), self._digests) is not None
