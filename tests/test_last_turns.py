"""A follow-up turn counts only what was added to its history, and its count is always the count
of the whole history: an edited, truncated or unrelated history is tallied in full."""

from __future__ import annotations

from typing import Any

from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT, RoutingConfig
from routing import Router, TokenCounter
from routing.features import LastTurns
from tests.bench.routing import _Backend


class Walked(TokenCounter):
    """A real counter that records how many messages each tally walked."""

    def __init__(self) -> None:
        super().__init__()
        self.walked: list[int] = []

    def tally(self, messages: list[dict[str, Any]], pending: list[str] | None = None) -> tuple[int, int, int]:
        self.walked.append(len(messages))
        return super().tally(messages, pending)


def history(turns: int, size: int = 2_000) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are Cline. " * 400},
        {"role": "user", "content": [{"type": "text", "text": "<task>\nfix the parser\n</task>"},
                                     {"type": "text", "text": "<environment_details>x</environment_details>"}]}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": f"<read_file>\n<path>src/m{i}.py</path>\n</read_file>"})
        messages.append({"role": "user", "content": [{"type": "text", "text": f"[read_file for 'src/m{i}.py'] Result:"},
                                                     {"type": "text", "text": f"line {i}\n" * (size // 8)}]})
    return messages


def routed(router: Router, messages: list[dict[str, Any]]) -> int:
    # A copy, as a new request's parsed body would be: nothing is shared with the last turn.
    body = {"model": "glm-4.7", "messages": [dict(m) for m in messages]}
    return router.route(body, "complexity").features.prompt_tokens


def truth(messages: list[dict[str, Any]]) -> int:
    return TokenCounter().count_messages(messages)


def make_router(counter: TokenCounter) -> Router:
    return Router({"local": _Backend(LOCAL_DEFAULT), "cloud": _Backend(CLOUD_DEFAULT)}, RoutingConfig(), counter)


def test_a_follow_up_walks_only_the_added_messages_and_counts_the_whole_history():
    counter = Walked()
    router = make_router(counter)
    messages = history(60)
    assert routed(router, messages) == truth(messages)
    messages += history(61)[-2:]
    assert routed(router, messages) == truth(messages)
    assert counter.walked == [len(messages) - 2, 2]


def test_an_edited_or_truncated_history_is_counted_in_full():
    counter = Walked()
    router = make_router(counter)
    messages = history(40)
    routed(router, messages)
    # Cline shortens an old file read in place when the same file is read again.
    edited = [dict(m) for m in messages]
    edited[5] = {"role": "user", "content": "[read_file for 'src/m1.py'] Result: (shortened: read again below)"}
    edited += history(41)[-2:]
    assert routed(router, edited) == truth(edited)
    assert counter.walked[-1] == len(edited)
    # Cline's truncation keeps the task and drops the oldest half of the turns.
    truncated = edited[:2] + edited[42:]
    assert routed(router, truncated) == truth(truncated)
    assert counter.walked[-1] == len(truncated)
    # A conversation that grows again after the truncation goes back to walking only what is new.
    truncated += history(42)[-2:]
    assert routed(router, truncated) == truth(truncated)
    assert counter.walked[-1] == 2


def test_a_retried_turn_with_a_different_last_message_is_counted_in_full():
    counter = Walked()
    router = make_router(counter)
    messages = history(10)
    routed(router, messages)
    retried = messages[:-1] + [{"role": "user", "content": "a different answer " * 300}]
    assert routed(router, retried) == truth(retried)
    assert counter.walked[-1] == len(retried)


def test_histories_are_held_for_a_few_conversations_and_never_with_images():
    counter = Walked()
    last = LastTurns(max_histories=2)
    conversations = [[{"role": "system", "content": f"agent {k}"}, *history(3)[1:]] for k in range(3)]
    for k, messages in enumerate(conversations):
        last.tally(f"key-{k}", messages, counter)
    counter.walked.clear()
    for k in (2, 1, 0):
        last.tally(f"key-{k}", [*conversations[k], {"role": "user", "content": "next"}], counter)
    # The two most recent walked one message; the least recent of three was let go (in full).
    assert counter.walked == [1, 1, len(conversations[0]) + 1]

    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    with_image = [*history(3), image]
    first = last.tally("shot", with_image, counter)
    second = last.tally("shot", [*with_image, {"role": "user", "content": "and?"}], counter)
    assert counter.walked[-2:] == [len(with_image), len(with_image) + 1]
    assert first[1] == second[1] == 1


def test_the_held_history_is_its_own_list_and_grows_without_touching_the_callers():
    # The held list grows in place on each follow-up (dropping it would free the last turn's
    # objects inside the decision), so it must never be a list a caller still holds.
    counter, last = Walked(), LastTurns()
    first = history(3)
    second = [*first, *history(4)[-2:]]
    third = [*second, *history(5)[-2:]]
    sizes = (len(first), len(second))
    last.tally("k", first, counter)
    last.tally("k", second, counter)
    assert last.tally("k", third, counter)[0].exact() == truth(third)
    assert (len(first), len(second)) == sizes
    assert counter.walked == [len(first), 2, 2]
