"""Per-tenant quotas without Ray: the keys file's fields, the shared ledger, the gate, the 429 it gives."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from serve_app.api.auth import Principal, parse_keys
from serve_app.protocol.errors import RateLimited
from serve_app.quotas.gate import UNCOUNTED, QuotaGate
from serve_app.quotas.ledger import QuotaLedger, duration
from serve_app.quotas.limits import Quota, quota_of

KEY = "sk-test-0001"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_keys_file_quota_fields_are_read():
    [k] = parse_keys(f"- key: {KEY}\n  name: acme\n  max_concurrent_requests: 2\n  tokens_per_minute: 600\n", "keys")
    assert k.principal.quota == Quota(2, 600)
    [plain] = parse_keys(f"- key: {KEY}\n  name: open\n", "keys")
    assert plain.principal.quota is None


@pytest.mark.parametrize("field", ["max_concurrent_requests", "tokens_per_minute"])
@pytest.mark.parametrize("value", [0, -3, 1.5, "10", True])
def test_a_bad_quota_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"keys\[0\]\.{field}: must be a whole number of at least 1"):
        parse_keys(f"- key: {KEY}\n  name: acme\n  {field}: {value!r}\n", "keys")
    with pytest.raises(ValueError, match=field):
        quota_of({field: value}, "entry")


def test_a_quota_not_enforced_yet_is_refused_not_ignored():
    with pytest.raises(ValueError, match=r"unknown field.*max_adapters_loaded"):
        parse_keys(f"- key: {KEY}\n  name: acme\n  max_adapters_loaded: 2\n", "keys")


def test_quotas_off_refuse_a_key_that_sets_one(monkeypatch, tmp_path):
    from serve_app.api.auth import KeyRing

    path = tmp_path / "keys.yaml"
    path.write_text(f"- key: {KEY}\n  name: acme\n  tokens_per_minute: 100\n")
    with pytest.raises(ValueError, match="acme sets a quota, but quotas are off"):
        KeyRing("NO_SUCH_ENV_FOR_TEST", str(path), quotas=False)
    assert KeyRing("NO_SUCH_ENV_FOR_TEST", str(path)).enabled


def test_concurrency_is_counted_over_holders_and_released():
    ledger = QuotaLedger(Clock())
    q = {"max_concurrent_requests": 2}
    a = ledger.acquire("acme", q, "router-1", 10)
    b = ledger.acquire("acme", q, "router-2", 10)
    assert a["granted"] and b["granted"]
    assert b["headers"] == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0"}
    refused = ledger.acquire("acme", q, "router-1", 10)
    assert not refused["granted"] and refused["kind"] == "requests" and refused["retry_after_s"] >= 1
    assert "concurrent requests: limit 2, running 2" in refused["message"]
    # Another tenant is not counted against this one.
    assert ledger.acquire("globex", q, "router-1", 10)["granted"]
    ledger.release("acme", q, a["lease"], 5)
    ledger.release("acme", q, a["lease"], 5)  # twice: still one slot back
    assert ledger.running("acme") == 1
    assert ledger.acquire("acme", q, "router-2", 10)["granted"]


def test_tokens_per_minute_bucket_refills_continuously():
    clock = Clock()
    ledger = QuotaLedger(clock)
    q = {"tokens_per_minute": 600}  # 10 tokens a second
    first = ledger.acquire("acme", q, "h", 500)
    assert first["granted"] and first["headers"]["x-ratelimit-remaining-tokens"] == "100"
    ledger.release("acme", q, first["lease"], 300)  # completion: the bucket goes to -200
    refused = ledger.acquire("acme", q, "h", 100)
    assert not refused["granted"] and refused["kind"] == "tokens"
    assert refused["retry_after_s"] == pytest.approx(30.0)  # 300 tokens short at 10/s
    assert refused["headers"]["x-ratelimit-remaining-tokens"] == "0"
    assert refused["headers"]["x-ratelimit-reset-tokens"] == "1m20s"
    clock.t += 30
    assert ledger.acquire("acme", q, "h", 100)["granted"]
    clock.t += 3600  # never above the limit
    assert ledger.acquire("acme", q, "h", 1)["headers"]["x-ratelimit-remaining-tokens"] == "599"


def test_a_prompt_larger_than_the_minute_can_never_pass():
    refused = QuotaLedger(Clock()).acquire("acme", {"tokens_per_minute": 100}, "h", 101)
    assert not refused["granted"] and "Request too large" in refused["message"]


def test_leases_of_a_silent_holder_expire_and_heartbeats_correct_the_count():
    clock = Clock()
    ledger = QuotaLedger(clock, holder_ttl_s=20)
    q = {"max_concurrent_requests": 3}
    ledger.acquire("acme", q, "dead", 1)
    kept = ledger.acquire("acme", q, "alive", 1)["lease"]
    lost = ledger.acquire("acme", q, "alive", 1)["lease"]
    clock.t += 10
    # "alive" names only one lease: the other's release was lost.
    ledger.heartbeat("alive", [("acme", q, kept)])
    assert ledger.running("acme") == 2
    clock.t += 15  # "dead" silent for 25 s
    ledger.heartbeat("alive", [("acme", q, kept)])
    assert ledger.running("acme") == 1
    assert lost != kept


def test_a_restarted_ledger_adopts_the_running_requests_from_heartbeats():
    ledger = QuotaLedger(Clock())
    q = {"max_concurrent_requests": 1}
    ledger.heartbeat("router-1", [("acme", q, "41")])
    assert not ledger.acquire("acme", q, "router-2", 1)["granted"]


def test_new_limits_apply_to_the_running_count():
    ledger = QuotaLedger(Clock())
    ledger.acquire("acme", {"max_concurrent_requests": 3}, "h", 1)
    ledger.acquire("acme", {"max_concurrent_requests": 3}, "h", 1)
    assert not ledger.acquire("acme", {"max_concurrent_requests": 2}, "h", 1)["granted"]


@pytest.mark.parametrize(
    "seconds, text", [(0.0201, "20ms"), (1.5, "1.5s"), (59.9994, "59.999s"), (60, "1m0s"), (361.25, "6m1.25s")]
)
def test_reset_times_are_written_as_openai_writes_them(seconds, text):
    assert duration(seconds) == text


def test_rate_limited_error_shape_headers_and_pickling():
    err = RateLimited("over", kind="tokens", retry_after_s=2.2, limits={"x-ratelimit-limit-tokens": "600"})
    assert err.status == 429
    assert err.to_dict() == {
        "error": {"message": "over", "type": "tokens", "param": None, "code": "rate_limit_exceeded"}
    }
    assert err.headers() == {"Retry-After": "3", "retry-after-ms": "2200", "x-ratelimit-limit-tokens": "600"}
    back = pickle.loads(pickle.dumps(err))
    assert back.headers() == err.headers() and back.to_dict() == err.to_dict()


class FakeKeeper:
    """The keeper's handle interface, over a ledger, in this process."""

    def __init__(self, fail: bool = False):
        self.ledger = QuotaLedger(Clock())
        self.fail = fail
        self.calls: list[str] = []
        for name in ("acquire", "release", "heartbeat"):
            setattr(self, name, self._method(name))

    def _method(self, name):
        keeper = self

        class Method:
            def remote(self, *args):
                keeper.calls.append(name)

                async def run():
                    if keeper.fail:
                        raise ConnectionError("keeper gone")
                    return getattr(keeper.ledger, name)(*args)

                return run()

        return Method()


def test_gate_counts_only_tenants_with_a_quota_and_releases_once():
    async def scenario():
        keeper = FakeKeeper()
        gate = QuotaGate(keeper, heartbeat_s=0.01)
        assert await gate.admit(Principal("open"), 10) is UNCOUNTED
        assert keeper.calls == []
        acme = Principal("acme", quota=Quota(max_concurrent_requests=1))
        a = await gate.admit(acme, 10)
        assert a.headers["x-ratelimit-remaining-requests"] == "0" and gate.running == 1
        with pytest.raises(RateLimited) as over:
            await gate.admit(acme, 10)
        assert over.value.headers()["Retry-After"] == "1"
        gate.release(a, 3)
        gate.release(a, 3)
        await asyncio.sleep(0.05)  # the release lands; a heartbeat goes
        assert keeper.calls.count("release") == 1 and "heartbeat" in keeper.calls
        assert (await gate.admit(acme, 10)).lease is not None

    asyncio.run(scenario())


def test_gate_admits_uncounted_when_the_keeper_is_away():
    async def scenario():
        gate = QuotaGate(FakeKeeper(fail=True))
        assert await gate.admit(Principal("acme", quota=Quota(max_concurrent_requests=1)), 10) is UNCOUNTED

    asyncio.run(scenario())


def test_a_changed_token_limit_caps_the_bucket_and_a_new_one_starts_full():
    ledger = QuotaLedger(Clock())
    assert (
        ledger.acquire("acme", {"tokens_per_minute": 600}, "h", 100)["headers"]["x-ratelimit-remaining-tokens"] == "500"
    )
    lowered = ledger.acquire("acme", {"tokens_per_minute": 300}, "h", 100)
    assert lowered["headers"]["x-ratelimit-remaining-tokens"] == "200"  # 500 capped at 300, then 100 taken
    ledger.acquire("globex", {"max_concurrent_requests": 5}, "h", 100)
    added = ledger.acquire("globex", {"tokens_per_minute": 300}, "h", 100)
    assert added["headers"]["x-ratelimit-remaining-tokens"] == "200"
