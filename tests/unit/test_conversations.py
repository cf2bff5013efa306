"""The Conversations API and ``conversation`` in /v1/responses, through the router app (real SQLite store)."""

from __future__ import annotations

import pytest

from tests.support.conformance import conform
from tests.support.fake_router import AUTH, BASE, OTHER, REASONING_THEN_FINAL, TOOL_CALL, WEATHER


@pytest.fixture
def app(fakes):
    client, replica, store = fakes
    replica.reply = REASONING_THEN_FINAL
    return client, replica, store


def _decode(ids) -> str:
    from serve_app.harmony.encoding import harmony_encoding

    return harmony_encoding().decode(ids)


def test_conversation_lifecycle_and_pagination(app):
    client, _, _ = app
    created = client.post(
        "/v1/conversations",
        headers=AUTH,
        json={"metadata": {"topic": "demo"}, "items": [{"role": "user", "content": f"m{i}"} for i in range(3)]},
    )
    assert created.status_code == 200, created.text
    conv = created.json()
    conform("ConversationResource", conv)
    cid = conv["id"]
    assert cid.startswith("conv_") and conv["metadata"] == {"topic": "demo"}
    empty = client.post("/v1/conversations", headers=AUTH)  # no body at all: an empty conversation
    assert empty.status_code == 200 and empty.json()["metadata"] == {}
    added = client.post(
        f"/v1/conversations/{cid}/items", headers=AUTH, json={"items": [{"role": "user", "content": "m3"}]}
    )
    conform("ConversationItemList", added.json())
    first = client.get(f"/v1/conversations/{cid}/items?order=asc&limit=2", headers=AUTH).json()
    conform("ConversationItemList", first)
    assert [i["content"][0]["text"] for i in first["data"]] == ["m0", "m1"] and first["has_more"] is True
    rest = client.get(f"/v1/conversations/{cid}/items?order=asc&limit=2&after={first['last_id']}", headers=AUTH).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m2", "m3"] and rest["has_more"] is False
    newest = client.get(f"/v1/conversations/{cid}/items?limit=1", headers=AUTH).json()  # desc by default
    assert newest["data"][0]["content"][0]["text"] == "m3"
    item = client.get(f"/v1/conversations/{cid}/items/{first['first_id']}", headers=AUTH).json()
    conform("ConversationItem", item)
    updated = client.post(f"/v1/conversations/{cid}", headers=AUTH, json={"metadata": {"topic": "new"}}).json()
    assert updated["metadata"] == {"topic": "new"}
    after_delete = client.delete(f"/v1/conversations/{cid}/items/{first['first_id']}", headers=AUTH).json()
    conform("ConversationResource", after_delete)
    assert len(client.get(f"/v1/conversations/{cid}/items", headers=AUTH).json()["data"]) == 3
    # Another tenant sees nothing of it.
    for r in (
        client.get(f"/v1/conversations/{cid}", headers=OTHER),
        client.get(f"/v1/conversations/{cid}/items", headers=OTHER),
        client.post(
            f"/v1/conversations/{cid}/items", headers=OTHER, json={"items": [{"role": "user", "content": "x"}]}
        ),
        client.delete(f"/v1/conversations/{cid}", headers=OTHER),
    ):
        assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found", r.text
    deleted = client.delete(f"/v1/conversations/{cid}", headers=AUTH).json()
    conform("DeletedConversationResource", deleted)
    assert client.get(f"/v1/conversations/{cid}", headers=AUTH).status_code == 404


def test_responses_read_and_extend_their_conversation(app):
    client, replica, _ = app
    cid = client.post(
        "/v1/conversations", headers=AUTH, json={"items": [{"role": "user", "content": "I live in Paris."}]}
    )
    cid = cid.json()["id"]
    replica.reply = TOOL_CALL
    first = client.post(
        "/v1/responses",
        headers=AUTH,
        json={"model": BASE, "input": "Weather here?", "tools": [WEATHER], "conversation": cid},
    ).json()
    assert first["conversation"] == {"id": cid}
    prompt = _decode(replica.requests[-1].prompt_token_ids)
    assert "I live in Paris." in prompt and "Weather here?" in prompt
    call = next(i for i in first["output"] if i["type"] == "function_call")
    replica.reply = REASONING_THEN_FINAL
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "21C"}
    second = client.post(
        "/v1/responses",
        headers=AUTH,
        json={"model": BASE, "input": [output], "tools": [WEATHER], "conversation": {"id": cid}},
    )
    assert second.status_code == 200, second.text
    prompt = _decode(replica.requests[-1].prompt_token_ids)
    assert "to=functions.get_weather" in prompt and "21C" in prompt and "I live in Paris." in prompt
    items = client.get(f"/v1/conversations/{cid}/items?order=asc", headers=AUTH).json()["data"]
    kinds = [(i["type"], i.get("role")) for i in items]
    assert kinds[:2] == [("message", "user"), ("message", "user")]
    assert ("function_call", None) in kinds and ("function_call_output", None) in kinds
    assert kinds[-1] == ("message", "assistant") and len({i["id"] for i in items}) == len(items)
    conform("ConversationItemList", client.get(f"/v1/conversations/{cid}/items", headers=AUTH).json())


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"conversation": "conv_nope"}, 404, "conversation"),
        ({"conversation": "conv_x", "previous_response_id": "resp_x"}, 400, None),
        ({"conversation": {"nope": 1}}, 400, "conversation"),
    ],
    ids=["unknown", "with-previous", "malformed"],
)
def test_a_bad_conversation_is_a_clear_4xx(app, body, status, param):
    client, _, _ = app
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", **body})
    assert r.status_code == status, r.text
    if param is not None:
        assert r.json()["error"]["param"] == param


def test_conversation_items_are_bounded_and_plain(app):
    client, _, _ = app
    cid = client.post("/v1/conversations", headers=AUTH).json()["id"]
    too_many = {"items": [{"role": "user", "content": "x"}] * 21}
    assert client.post(f"/v1/conversations/{cid}/items", headers=AUTH, json=too_many).status_code == 400
    ref = {"items": [{"type": "item_reference", "id": "msg_1"}]}
    r = client.post(f"/v1/conversations/{cid}/items", headers=AUTH, json=ref)
    assert r.status_code == 400 and r.json()["error"]["param"] == "items"
    assert client.get(f"/v1/conversations/{cid}/items?limit=0", headers=AUTH).status_code == 400
