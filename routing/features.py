"""Request features: what routing needs to know about a chat request. Pure, no I/O.

The *task* is the user's latest real instruction, not whatever came last. Two Cline shapes, and
Claude Code's (through the Anthropic front, which turns its tool results into ``role: "tool"``
messages): its ``<system-reminder>`` blocks ride in user turns and are never the task.

Cline's shapes:

- the classic extension wraps the task in ``<task>…</task>``, sends tool results as user turns
  that start ``[read_file for 'x'] Result:``, puts the user's later words in
  ``<feedback>``/``<answer>`` inside some of those results, and appends
  ``<environment_details>`` to user turns;
- the Cline CLI/SDK sends the task as plain text (or ``<user_input mode="act">…</user_input>``),
  tool results as ``role: "tool"`` messages, and ``[SYSTEM] This run is not complete…``
  reminders as user turns, which are never the task.

Agent-written user turns (``[ERROR] You did not use a tool…``, ``[SYSTEM] …``) are skipped the
same way. A *compaction* request (no tools, one huge "summarise this session" prompt) is a
summarising task: its transcript is never taken for the task. Classifying the 8k-token system
prompt or a file's contents would route on noise.

    features = extract_features(body, counter)
    features.task_text, features.prompt_tokens, features.conversation_key
"""

from __future__ import annotations

import collections
import hashlib
import re
from typing import Any, Mapping

import attrs
import orjson

from routing.tokens import PENDING_CHARS, PromptCount, TokenCounter, message_text

TASK_TAGS = re.compile(r"<(task|feedback|answer|user_message|user_input)(?:\s[^>]*)?>\s*(.*?)\s*</\1>", re.S)
# User turns the agent wrote itself (Cline's reminders and error notices), never the task.
AGENT_TURN = re.compile(r"\s*\[(?:SYSTEM|ERROR)\]")
COMPACTION = re.compile(r"\s*Summari[sz]e (?:the provided coding session|this session for continuation)")
# "[tool for 'x'] Result:", where x may hold brackets itself (Next.js: app/[slug]/page.tsx).
TOOL_RESULT = re.compile(r"\s*\[([\w-]+)(?: for '[^\n]*?')?(?: in '[^\n]*?')?\] Result:")
# Tool results that can carry the user's own words (Cline's follow-up answers and feedback).
TOOLS_WITH_USER_WORDS = frozenset({"attempt_completion", "ask_followup_question", "plan_mode_respond"})
# What the agent adds to a user turn (Cline's environment, Claude Code's reminders): not the task.
AGENT_CONTEXT = re.compile(r"<(environment_details|system-reminder)>.*?(?:</\1>|\Z)", re.S)
KEY_CHARS = 4096


@attrs.frozen
class Features:
    task_text: str
    task_tokens: int
    # The prompt's size: exact, or bounds until counted (a follow-up turn's new text is counted
    # after the decision, routing.tokens.PromptCount). Given as an int or a PromptCount.
    prompt: PromptCount = attrs.field(alias="prompt_tokens", converter=PromptCount.of)
    code_blocks: int
    has_tools: bool
    has_images: bool
    max_tokens: int | None
    depth: int  # assistant turns so far
    conversation_key: str
    compaction: bool = False  # a "summarise this session" request: not a task, not a new conversation

    @property
    def prompt_tokens(self) -> int:
        """The exact count, counted now if it was not yet."""
        return self.prompt.exact()

    def needed_tokens(self, reserve: int) -> int:
        """Context the request needs: the prompt plus room for the answer."""
        return self.prompt_tokens + (self.max_tokens or reserve)

    def sized(self, tokens: int) -> Features:
        """These features with a prompt of exactly ``tokens``: each end of a deferred count's
        bounds, for deciding on them. Built directly: ``attrs.evolve`` introspects the class on
        every call, a tenth of a follow-up turn's decision."""
        return Features(task_text=self.task_text, task_tokens=self.task_tokens, prompt_tokens=tokens,
                        code_blocks=self.code_blocks, has_tools=self.has_tools, has_images=self.has_images,
                        max_tokens=self.max_tokens, depth=self.depth, conversation_key=self.conversation_key,
                        compaction=self.compaction)


class LastTurns:
    """What each conversation's last turn showed: its task and how many messages it had, and
    for the few most recent conversations, the messages themselves and their token tally.

    Cline and Claude Code resend the whole history every turn. Finding the task again would
    walk hundreds of messages: with this memo a later turn reads only the messages added since
    (a new instruction there wins), else keeps the task it had. A history that shrank (Cline
    truncates long ones) is searched in full.

    Counting tokens is the same walk, and it was most of a follow-up turn's routing time (a
    Python step per message, ~250 of them at 128k tokens). A turn whose history starts with
    exactly the last turn's messages tallies only what was added. "Exactly" is Python's own
    deep ``==``, which runs in C, mostly a ``memcmp`` (a 128k-token history in about 0.1 ms):
    a history edited anywhere, as Cline does when it truncates or shortens old file reads,
    fails it and is tallied in full, so the count is never stale. The messages are held only
    for ``max_histories`` conversations, about 0.7 MB each at 128k tokens, and never with
    images.
    """

    def __init__(self, max_size: int = 10_000, max_histories: int = 16) -> None:
        self.max_size = max_size
        self.max_histories = max_histories
        self._map: collections.OrderedDict[str, tuple[int, str]] = collections.OrderedDict()
        self._histories: collections.OrderedDict[str, tuple[list[Any], tuple[PromptCount, int, int]]] = \
            collections.OrderedDict()

    def get(self, key: str) -> tuple[int, str] | None:
        return self._map.get(key)

    def put(self, key: str, n_messages: int, task: str) -> None:
        self._map[key] = (n_messages, task)
        self._map.move_to_end(key)
        if len(self._map) > self.max_size:
            self._map.popitem(last=False)

    def tally(self, key: str, messages: list[dict[str, Any]], counter: TokenCounter) -> tuple[PromptCount, int, int]:
        """``counter.tally(messages)``, counting only what was added since this conversation's
        last turn when everything before it is unchanged. What was added is only bounded, if
        the counter can (:class:`routing.tokens.PromptCount`), and counted after the decision."""
        held = self._histories.get(key) if key else None
        totals: tuple[PromptCount, int, int]
        if held is not None and len(messages) >= len(held[0]) and messages[:len(held[0])] == held[0]:
            count, images, depth = held[1]
            added_messages = messages[len(held[0]):]
            pending: list[str] | None = [] if counter.bounds is not None else None
            added = counter.tally(added_messages, pending)
            if pending and sum(map(len, pending)) > PENDING_CHARS:
                added = (added[0] + sum(map(counter.count_cached, pending)), *added[1:])
                pending = None
            # The last turn's count is exact by now: its request counted it while upstream worked.
            totals = (PromptCount(count.exact() + added[0], pending or (), counter), images + added[1],
                      depth + added[2])
            # The held list grows in place rather than being replaced by this turn's: dropping
            # it would free ~1,000 objects (0.7 MB at 128k tokens, cold in the cache) inside
            # this decision, a third of its time. The request's own copy is freed when its
            # response ends, as it was before anything was held.
            history = held[0]
            history += added_messages
        else:
            tokens, images, depth = counter.tally(messages)
            totals = (PromptCount(tokens), images, depth)
            history = list(messages)
        # Not held with images: a screenshot's base64 can be megabytes, where text is ~0.7 MB
        # at 128k tokens.
        if key and self.max_histories and not totals[1]:
            self._histories[key] = (history, totals)
            self._histories.move_to_end(key)
            if len(self._histories) > self.max_histories:
                self._histories.popitem(last=False)
        return totals


def extract_features(body: Mapping[str, Any], counter: TokenCounter, known: LastTurns | None = None) -> Features:
    # filter() with the type's own check runs in C: a comprehension is a Python step per message.
    messages = list(filter(dict.__instancecheck__, body.get("messages") or ()))
    key = conversation_key(messages)
    if known is not None:
        prompt, images, depth = known.tally(key, messages, counter)
    else:
        tokens, images, depth = counter.tally(messages)
        prompt = PromptCount(tokens)
    tools = body.get("tools")
    if tools:
        # Tool schemas are sent on every turn and count against the context.
        prompt = PromptCount(counter.count_cached(orjson.dumps(tools).decode()), base=prompt)
    compaction = is_compaction(messages, bool(tools))
    task = ""
    if not compaction:
        seen = known.get(key) if known is not None and key else None
        if seen is not None and len(messages) >= seen[0]:
            task = task_text(messages[seen[0]:]) or seen[1]
        else:
            task = task_text(messages)
        if known is not None and key:
            known.put(key, len(messages), task)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return Features(
        task_text=task,
        task_tokens=counter.count_cached(task),  # the same task, turn after turn
        prompt_tokens=prompt,
        code_blocks=task.count("```") // 2,
        has_tools=bool(tools),
        has_images=bool(images),
        max_tokens=max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None,
        depth=depth,
        conversation_key=key,
        compaction=compaction,
    )


def is_compaction(messages: list[dict[str, Any]], has_tools: bool) -> bool:
    """The Cline CLI's context compaction: no tools, a summariser system prompt or a summarise
    instruction opening the one user message that carries the whole transcript."""
    if has_tools or not messages:
        return False
    system = user = None
    for message in messages:  # stops at a second user turn: a conversation, not a compaction
        role = message.get("role")
        if role == "user":
            if user is not None:
                return False
            user = message
        elif role in ("system", "developer") and system is None:
            system = message
    return any(m is not None and COMPACTION.match(_head(m)) for m in (system, user))


def _head(message: dict[str, Any]) -> str:
    parts = _text_parts(message.get("content"))
    return parts[0][:200] if parts else ""


def task_text(messages: list[dict[str, Any]]) -> str:
    """The latest real user instruction, searched from the newest message back."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        parts = _text_parts(message.get("content"))
        if not parts:
            continue
        if AGENT_TURN.match(parts[0]):
            continue  # the agent's own reminder or error notice
        tool = TOOL_RESULT.match(parts[0])
        if tool and tool.group(1) not in TOOLS_WITH_USER_WORDS:
            continue  # tool output: never scanned, it can be a whole file
        text = "\n".join(parts)
        if "<system-reminder>" in text:
            text = AGENT_CONTEXT.sub("", text)  # before the tags: a reminder may quote any of them
        tagged = TASK_TAGS.findall(text)
        if tagged:
            return tagged[-1][1]
        if tool:
            continue  # a completion/follow-up result with no words from the user
        text = AGENT_CONTEXT.sub("", text).strip()
        if text:
            return text
    return ""


def conversation_key(messages: list[dict[str, Any]]) -> str:
    """A stable id for a conversation: a hash of its first system and user messages.

    Later turns append to the list, so the key survives the whole conversation. Each message
    counts by its length, its start and its end: Claude Code's first user message opens with
    the project's CLAUDE.md (the same in every session of a project) and ends with the task.
    """
    if not messages:
        return ""
    # SHA-1 as a fingerprint, not for security: OpenSSL's runs at about twice the speed of
    # CPython's portable BLAKE2 here, and up to 16 kB are hashed on every turn.
    digest = hashlib.sha1(usedforsecurity=False)
    for message in messages[:4]:
        role = message.get("role")
        text, _ = message_text(message)
        digest.update(f"{role}:{len(text)}:".encode())
        digest.update(text[:KEY_CHARS].encode("utf-8", "surrogatepass"))
        if len(text) > KEY_CHARS:
            digest.update(text[-KEY_CHARS:].encode("utf-8", "surrogatepass"))
        if role == "user":
            break
    return digest.hexdigest()[:24]


def _text_parts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content
                if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)]
    return []
