"""Failure signals in an agent conversation: evidence that the model serving it is failing. Pure.

A *turn* is what the agent wrote back after one assistant message: the tool results and user
messages up to the next assistant message. A *signal* is one of the agent's own automated texts
(Cline's by default, configurable for other agents) recognised **structurally**, at the start of
something the agent wrote, never as a substring of file contents or command output:

- a user turn's leading text (Cline's ``[ERROR] You did not use a tool…``, the Cline CLI's
  ``[SYSTEM] This run is not complete…`` after a text-only answer, "You seem to be having
  trouble proceeding");
- the body right after a classic tool-result header (``[replace_in_file for 'a.py'] Result:``
  then "The tool execution failed…", a SEARCH block that does not match, a missing parameter,
  or an ``attempt_completion`` rejected with feedback);
- a ``role: "tool"`` message's leading text, or, for the Cline CLI/SDK, its JSON result with
  ``"success": false`` from a tool in ``failing_tools`` (an edit that did not apply, a bad path or
  range). A command that exits non-zero is normal work, not a signal.

    detector = Detector(cfg.routing.escalation)
    turns = detector.recent_turns(messages, 4)       # newest last: [frozenset({"tool_failed"}), ...]
    detector.escalates(turns)                        # True: 2 signals in the last 4 turns, or an alarm
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

import orjson

from config.routing import EscalationConfig

ENVIRONMENT = re.compile(r"<environment_details>.*?(?:</environment_details>|\Z)", re.S)
HEADER = re.compile(r"\s*\[([\w-]+)(?: for '[^\n]*?')?(?: in '[^\n]*?')?\] Result:\s*")
LEAD_CHARS = 300  # a signal is in the first words of what the agent wrote, never deeper


class Detector:
    def __init__(self, cfg: EscalationConfig) -> None:
        self.cfg = cfg
        # More specific patterns first: a SEARCH mismatch arrives wrapped as a tool failure.
        ordered = sorted(cfg.patterns.items(), key=lambda kv: kv[0] != "search_mismatch")
        self.patterns = [(name, re.compile(r"\s*(?:" + pattern + ")")) for name, pattern in ordered]
        # All of them as one alternation, tried once per lead instead of once per pattern: the
        # first alternative that matches is the first pattern that would have. Only for patterns
        # without groups of their own, whose numbers (and backreferences) the alternation shifts.
        self._any = None if any(p.groups for _, p in self.patterns) else re.compile(
            "|".join(f"(?P<{name}>{p.pattern})" for name, p in self.patterns))
        self.failing_tools = frozenset(cfg.failing_tools)
        self.alarms = frozenset(cfg.alarms)

    # --- reading turns ---------------------------------------------------------------------------
    def recent_turns(self, messages: Sequence[Any], n: int) -> list[frozenset[str]]:
        """The signals of the last ``n`` turns, oldest first (fewer if the conversation is young)."""
        turns: list[frozenset[str]] = []
        group: list[dict[str, Any]] = []
        calls: dict[str, str] | None = None
        for message in reversed(messages):
            if not isinstance(message, dict):
                continue
            if message.get("role") != "assistant":
                group.append(message)
                continue
            if group:
                calls = _call_names(message)
                turns.append(self.signals(reversed(group), calls))
                group = []
                if len(turns) == n:
                    break
            # An assistant message with no feedback after it (the newest turn is always
            # feedback in an agent loop) ends nothing.
        return turns[::-1]

    def signals(self, feedback: Iterator[dict[str, Any]] | Sequence[dict[str, Any]],
                calls: dict[str, str] | None = None) -> frozenset[str]:
        """The signals in one turn's messages (``calls``: tool_call_id -> tool name)."""
        found: set[str] = set()
        for message in feedback:
            role = message.get("role")
            if role == "tool":
                found.update(self._tool_message(message, calls or {}))
            elif role == "user":
                for lead in _leads(message.get("content")):
                    found.update(self._match(lead))
        return frozenset(found)

    def escalates(self, turns: Sequence[frozenset[str]]) -> bool:
        recent = turns[-self.cfg.window:]
        if any(s & self.alarms for s in recent):
            return True
        return sum(1 for s in recent if s) >= self.cfg.signals

    # --- matching --------------------------------------------------------------------------------
    def _match(self, lead: str) -> list[str]:
        if self._any is not None:
            found = self._any.match(lead)
            return [found.lastgroup] if found is not None and found.lastgroup else []
        for name, pattern in self.patterns:
            if pattern.match(lead):
                return [name]
        return []

    def _tool_message(self, message: dict[str, Any], calls: dict[str, str]) -> list[str]:
        text = _text(message.get("content"))
        head = text.lstrip()[:1]
        if head == "{":
            try:
                result = orjson.loads(text)
            except orjson.JSONDecodeError:
                result = None
            if isinstance(result, dict) and "success" in result:
                tool = calls.get(str(message.get("tool_call_id"))) or str(result.get("toolName") or "")
                failed = result.get("success") is False and tool in self.failing_tools
                return ["tool_failed"] if failed else []
        return self._match(text[:LEAD_CHARS])


def _call_names(assistant: dict[str, Any]) -> dict[str, str]:
    out = {}
    for call in assistant.get("tool_calls") or ():
        if isinstance(call, dict):
            out[str(call.get("id"))] = str((call.get("function") or {}).get("name") or "")
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _leads(content: Any) -> Iterator[str]:
    """The starts of what the agent wrote in one user message: each text part, and the body
    after each tool-result header (in the same part, or in the next part when it is alone)."""
    parts = [content] if isinstance(content, str) else [
        p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
    ] if isinstance(content, list) else []
    after_header = False
    for part in parts:
        header = HEADER.match(part)
        if header:
            rest = part[header.end():]
            if rest.strip():
                yield rest[:LEAD_CHARS]
                after_header = False
            else:
                after_header = True  # the body is the next part
            continue
        if after_header or not part.lstrip().startswith("<environment_details>"):
            yield part[:LEAD_CHARS]
        after_header = False


def turn_fingerprint(messages: Sequence[Any]) -> int | None:
    """Identifies the newest turn (the last assistant message and what came back): equal
    fingerprints on consecutive requests mean the agent repeated itself with the same result."""
    tail: list[Any] = []
    for message in reversed(messages):
        if not isinstance(message, dict):
            return None
        # environment_details carry a clock (classic Cline): a repeat is the same words around it.
        text = ENVIRONMENT.sub("", _text(message.get("content"))[:4000])
        tail.append((message.get("role"), text,
                     orjson.dumps(message.get("tool_calls")) if message.get("tool_calls") else b""))
        if message.get("role") == "assistant":
            return hash(tuple(tail))
    return None
