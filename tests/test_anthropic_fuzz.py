"""Property-based, for the Anthropic front: whatever a Messages API client sends, the answer is
below 500, in Anthropic's error shape when it is an error, and the gateway keeps serving."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.test_fuzz import FUZZ, JSON, Response, served  # noqa: F401  (served: the fixture)

TEXT = st.text(max_size=30)
SOURCE = st.fixed_dictionaries(
    {"type": st.sampled_from(["base64", "url", "file", "text"]) | JSON},
    optional={"media_type": st.sampled_from(["image/png", "image/bmp", "application/pdf", "text/plain"]) | JSON,
              "data": st.just("iVBORw0KGgo=") | JSON, "url": st.just("https://example.com/a.png") | JSON})
BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking",
                              "document", "search_result", "tool_reference", "video"]) | JSON},
    optional={"text": TEXT | JSON, "source": SOURCE | JSON, "id": st.sampled_from(["toolu_1", "toolu_2"]) | JSON,
              "name": st.sampled_from(["Read", "Bash", ""]) | JSON, "input": st.just({"file_path": "a.py"}) | JSON,
              "tool_use_id": st.sampled_from(["toolu_1", "toolu_2", "nope"]) | JSON,
              "content": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
              | JSON,
              "is_error": st.booleans() | JSON, "thinking": TEXT | JSON, "signature": TEXT | JSON,
              "cache_control": st.just({"type": "ephemeral"}) | JSON})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | JSON},
    optional={"content": TEXT | st.lists(BLOCK, max_size=3) | JSON})
GOOD = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=30)})
TOOL = st.fixed_dictionaries(
    {"name": st.sampled_from(["Read", "Bash", ""]) | JSON},
    optional={"type": st.sampled_from(["custom", "web_search_20250305"]) | JSON, "description": TEXT | JSON,
              "input_schema": st.just({"type": "object", "properties": {}}) | JSON})
NEAR_VALID = st.fixed_dictionaries(
    {"messages": st.lists(GOOD, min_size=1, max_size=2) | st.lists(MESSAGE, max_size=4) | JSON},
    optional={"model": st.sampled_from(["claude-sonnet-4-5", "claude-haiku-4-5", "glm-4.7-local", "gpt-4", ""])
              | JSON, "max_tokens": st.integers(-2, 40_000) | JSON, "stream": st.booleans() | JSON,
              "system": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
              | JSON,
              "tools": st.lists(TOOL, max_size=2) | JSON,
              "tool_choice": st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none", "x"])},
                                                   optional={"name": st.sampled_from(["Read", "Write"])}) | JSON,
              "thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled", "adaptive", "on"])},
                                                optional={"budget_tokens": st.integers(0, 50_000) | JSON}) | JSON,
              "temperature": st.floats(-1, 2) | JSON, "top_p": JSON, "top_k": st.integers(-2, 100) | JSON,
              "stop_sequences": st.lists(TEXT, max_size=3) | JSON, "metadata": JSON, "output_config": JSON,
              "speed": JSON, "mcp_servers": JSON, "unknown_field": JSON})

# Valid at the top, so that examples get past the envelope to the blocks, tools and options, and
# a good share is served by a backend (checked below).
TURN = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=30)
                              | st.lists(BLOCK, min_size=1, max_size=2)})
MOSTLY_VALID = st.fixed_dictionaries(
    {"model": st.sampled_from(["claude-sonnet-4-5", "claude-haiku-4-5", "glm-4.7-local"]),
     "max_tokens": st.integers(1, 4096), "messages": st.lists(GOOD, min_size=1, max_size=2) | st.lists(TURN, min_size=1,
                                                                                                        max_size=2)},
    optional={"stream": st.booleans(), "tools": st.lists(TOOL, max_size=2),
              "tool_choice": st.fixed_dictionaries({"type": st.sampled_from(["auto", "none"])}),
              "temperature": st.floats(0, 1), "top_k": st.integers(0, 50), "stop_sequences": st.lists(
                  st.text(min_size=1, max_size=5), max_size=2),
              "system": TEXT, "speed": st.just("fast")})


def check(response: Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    elif response.text.startswith("event:"):  # a stream: it ended normally, or with an error event
        assert "event: message_stop" in response.text or "event: error" in response.text


@FUZZ
@given(body=JSON)
def test_arbitrary_json(served, body):  # noqa: F811
    _, client = served
    check(client.post("/v1/messages", content=json.dumps(body).encode()))


@FUZZ
@given(body=st.one_of(NEAR_VALID, MOSTLY_VALID))
def test_near_valid_messages_bodies(served, body):  # noqa: F811
    _, client = served
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        check(client.post(path, content=json.dumps(body).encode()))


def test_the_mostly_valid_strategy_reaches_the_backends():
    import warnings

    from gateway.anthropic.request import parse_messages_request
    from gateway.errors import InvalidRequest

    valid = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .example() warns that it is not for tests; it samples here
        for _ in range(200):
            try:
                parse_messages_request(json.dumps(MOSTLY_VALID.example()).encode(), "application/json")
                valid += 1
            except InvalidRequest:
                pass
    assert valid >= 40  # a fifth of the examples at least get to routing and a backend


def test_the_front_still_serves_after_the_fuzzing(served):  # noqa: F811
    _, client = served
    ok = client.post("/v1/messages", json={"model": "claude-haiku-4-5", "max_tokens": 64,
                                           "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and ok.json()["content"][0]["type"] == "text", ok.text
