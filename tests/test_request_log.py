"""The request log: every chat request gets one JSON line on ``gateway.request``, including those
refused before any backend was tried (issue #12: two 429s showed on /stats but not in the log,
so an operator could not see why Cline sat still for a minute)."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import openai
import orjson
import pytest

from backends.sim import Fault
from tests.conftest import CLOUD_KEY, user

KEY = "gw-key-request-log-0123456789"
SECRET_TEXT = "the-users-private-code-4711"


class Lines(logging.Handler):
    """The request log's lines, parsed. Attached to the logger itself: ``setup_logging`` (run by
    any in-process serve) stops propagation at "gateway", where caplog would never see them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, rid: str) -> list[tuple[int, dict[str, Any]]]:
        """(level, parsed entry) of each request line about request ``rid``."""
        found = []
        for record in self.records:
            message = record.getMessage()
            if message.startswith("request {"):
                entry = orjson.loads(message.removeprefix("request "))
                if entry.get("id") == rid:
                    found.append((record.levelno, entry))
        return found

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("gateway.request")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def post(http, server, body: dict[str, Any], rid: str, key: str | None = None) -> tuple[int, Any, Any]:
    headers = {"x-request-id": rid, **({"Authorization": f"Bearer {key}"} if key else {})}
    async with http.post(server.make_url("/v1/chat/completions"), json=body, headers=headers) as resp:
        return resp.status, resp.headers, await resp.json()


async def test_a_429_from_no_backend_available_is_logged_with_retry_after(gateway_factory, cloud_sim, http, lines):
    server = await gateway_factory()
    cloud_sim.push_faults(Fault.http_error(429, retry_after=58))
    pinned = {"model": "glm-4.7-cloud", "messages": user("Say hello")}
    # The cloud's own 429: served by no one, the handler's line says what the client was told.
    status, headers, _ = await post(http, server, pinned, "first429")
    assert status == 429 and headers["Retry-After"] == "58"
    ((level, first),) = lines.of("first429")
    assert level == logging.INFO and first["http_status"] == 429 and first["retry_after_s"] == 58
    assert first["error"] == "BackendUnavailable" and first["client"].startswith("addr:")
    # Now the cloud cools down for 58 s: the next request is refused before any backend is tried.
    status, headers, body = await post(http, server, pinned, "refused429")
    assert status == 429 and headers["Retry-After"] == "58"
    assert body["error"]["code"] == "no_backend_available"
    ((level, entry),) = lines.of("refused429")
    assert level == logging.INFO
    assert entry["status"] == "refused" and entry["http_status"] == 429 and entry["retry_after_s"] == 58
    assert entry["code"] == "no_backend_available" and "cloud: cooling down after 429" in entry["reason"]
    assert entry["client"].startswith("addr:")
    # ...and a request that can be served still is (locally), with one line of its own.
    status, headers, _ = await post(http, server, {"model": "glm-4.7", "messages": user("Say hello")}, "served")
    assert status == 200 and headers["x-glm-backend"] == "local"
    ((level, served),) = lines.of("served")
    assert served["status"] == "ok" and served["served_by"] == "local"


async def test_an_over_budget_refusal_is_logged(gateway_factory, http, lines):
    server = await gateway_factory(budget={"daily_usd": 0.00001})  # one cloud answer spends it
    pinned = {"model": "glm-4.7-cloud", "messages": user("Say hello")}
    assert (await post(http, server, pinned, "spends"))[0] == 200
    status, headers, body = await post(http, server, pinned, "overbudget")
    assert status == 503 and "over budget" in body["error"]["message"]
    ((level, entry),) = lines.of("overbudget")
    assert level == logging.INFO and entry["status"] == "refused" and entry["http_status"] == 503
    assert entry["code"] == "no_backend_available"
    assert "over budget (daily cloud budget of $0.00 spent)" in entry["reason"]
    assert "retry_after_s" not in entry  # not temporary: no retry-after on the wire either
    assert "Retry-After" not in headers


async def test_limits_and_auth_refusals_are_logged_at_info_without_the_key(gateway_factory, http, lines):
    server = await gateway_factory(auth={"keys": (KEY,)}, limits={"requests_per_minute_per_key": 1})
    ok = {"model": "glm-4.7", "messages": user(SECRET_TEXT)}
    assert (await post(http, server, ok, "allowed", key=KEY))[0] == 200
    status, headers, _ = await post(http, server, ok, "ratelimited", key=KEY)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    ((level, entry),) = lines.of("ratelimited")
    assert level == logging.INFO and entry["code"] == "client_rate_limited"
    assert entry["client"] == "key#1" and entry["retry_after_s"] >= 1
    status, _, _ = await post(http, server, ok, "nokey", key="gw-wrong-key-0123456789")
    assert status == 401
    ((level, entry),) = lines.of("nokey")
    assert level == logging.INFO and entry["http_status"] == 401 and entry["code"] == "invalid_api_key"
    assert entry["client"].startswith("addr:")
    logged = lines.text()
    assert KEY not in logged and "gw-wrong-key" not in logged and SECRET_TEXT not in logged


async def test_input_errors_are_logged_at_debug_with_their_param_and_no_body(gateway, http, lines):
    bad = {"model": "glm-4.7", "messages": [{"role": "user", "content": [
        {"type": "text", "text": SECRET_TEXT}, {"type": "video_frame", "data": SECRET_TEXT}]}]}
    status, _, body = await post(http, gateway, bad, "badpart")
    assert status == 400 and body["error"]["param"] == "messages[0].content[1].type"
    ((level, entry),) = lines.of("badpart")
    assert level == logging.DEBUG
    assert entry == {"id": "badpart", "status": "rejected", "http_status": 400, "code": "invalid_value",
                     "param": "messages[0].content[1].type", "client": entry["client"],
                     "path": "/v1/chat/completions"}
    status, _, _ = await post(http, gateway, {"model": "gpt-99", "messages": user()}, "unknownmodel")
    assert status == 404
    ((level, entry),) = lines.of("unknownmodel")
    assert level == logging.DEBUG and entry["code"] == "model_not_found" and entry["param"] == "model"
    assert SECRET_TEXT not in lines.text() and "gpt-99" not in lines.text()


async def test_each_request_is_logged_once(gateway, http, lines, cloud_sim):
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as client:
        await client.chat.completions.create(model="glm-4.7", messages=user(), extra_headers={"x-request-id": "once"})
        stream = await client.chat.completions.create(model="glm-4.7", messages=user(), stream=True,
                                                      extra_headers={"x-request-id": "oncestream"})
        [c async for c in stream]
        # An upstream 4xx after routing: the handler's line has it; the middleware adds none.
        cloud_sim.push_faults(Fault.http_error(400))
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="glm-4.7-cloud", messages=user(),
                                                 extra_headers={"x-request-id": "upstream400"})
    for rid in ("once", "oncestream", "upstream400"):
        assert len(lines.of(rid)) == 1, lines.of(rid)
    ((_, entry),) = lines.of("upstream400")
    assert entry["http_status"] == 400 and entry["error"] == "BackendRejected"
    assert CLOUD_KEY not in lines.text()
