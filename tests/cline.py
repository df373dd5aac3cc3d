"""Cline-shaped conversations for tests: the classic extension and the Cline CLI 3.0.65.

The CLI's first turn is the captured request (tests/fixtures/cline-cli-3.0.65); the classic shape
follows Cline's own code (``<task>``, ``[tool for 'x'] Result:`` user turns, environment details).
Each builder returns a new list; a conversation grows by appending a turn's messages.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "cline-cli-3.0.65"
CLASSIC_SYSTEM = ("You are Cline, a highly skilled software engineer. TOOL USE: you have access to tools "
                  "that are executed upon the user's approval. # Tools ## read_file ## replace_in_file "
                  "## execute_command ## attempt_completion. ") * 20
ENV = "<environment_details>\n# Current Working Directory (/home/user/project) Files\nsrc/\n</environment_details>"
REMINDER = ("[SYSTEM] This run is not complete until you call one of these terminal completion tools: "
            "submit_and_exit. Continue working if requirements are not met. If the task is complete, call the "
            "appropriate terminal completion tool now.")
NO_TOOL = "[ERROR] You did not use a tool in your previous response! Please retry with a tool use."
SEARCH_MISS = ("The tool execution failed with the following error:\n<error>\nThe SEARCH block:\n"
               "def load():\n...does not match anything in the file.\n</error>")
ALARM = ("You seem to be having trouble proceeding. The user has provided the following feedback to help guide "
         "you:\n<feedback>\nstop guessing\n</feedback>")


@functools.cache
def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())["body"]


# --- classic extension ---------------------------------------------------------------------------
def classic_first(task: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": CLASSIC_SYSTEM},
            {"role": "user", "content": [{"type": "text", "text": f"<task>\n{task}\n</task>"},
                                         {"type": "text", "text": ENV}]}]


def classic_turn(tool: str, target: str, result: str) -> list[dict[str, Any]]:
    """One assistant tool use and its result, as classic Cline sends them."""
    call = f"<{tool}>\n<path>{target}</path>\n</{tool}>"
    return [{"role": "assistant", "content": call},
            {"role": "user", "content": [{"type": "text", "text": f"[{tool} for '{target}'] Result:"},
                                         {"type": "text", "text": result}, {"type": "text", "text": ENV}]}]


def classic_no_tool(answer: str = "I think the fix is done.") -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": answer},
            {"role": "user", "content": [{"type": "text", "text": NO_TOOL}, {"type": "text", "text": ENV}]}]


def classic_healthy(i: int) -> list[dict[str, Any]]:
    """A successful turn whose file contents and command output quote Cline's own error texts."""
    if i % 2:
        body = f"def test_{i}():\n    assert '{NO_TOOL}' in log\n    # {SEARCH_MISS}\n"
        return classic_turn("read_file", f"tests/test_{i}.py", body)
    return classic_turn("execute_command", "pytest -q", f"Command executed.\nOutput:\n{ALARM}\n{i} passed")


# --- Cline CLI / SDK -----------------------------------------------------------------------------
def cli_first(task: str) -> dict[str, Any]:
    """The captured first request with another task: returns the whole body (tools included)."""
    body = copy.deepcopy(fixture("request-1-first-turn.json"))
    body["messages"][1]["content"] = task
    body["stream"] = False
    body.pop("stream_options", None)
    return body


def cli_text_only(answer: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": answer}, {"role": "user", "content": REMINDER}]


def cli_tool(i: int, tool: str, ok: bool, result: str = "done") -> list[dict[str, Any]]:
    call_id = f"call_{i}"
    outcome = {"query": f"{tool}:{i}", "result": result, "success": True} if ok else \
        {"query": f"{tool}:{i}", "result": "", "error": "Invalid file range: 90-120", "success": False}
    return [{"role": "assistant", "content": None,
             "tool_calls": [{"id": call_id, "type": "function",
                             "function": {"name": tool, "arguments": json.dumps({"path": f"src/m{i}.py"})}}]},
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps(outcome)}]
