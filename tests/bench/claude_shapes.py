"""Claude Code-shaped Messages requests (``POST /v1/messages``) for the routing benchmark.

The structure follows ``tests/fixtures/claude-code`` (whose texts are reused, trimmed): a
``system`` list of three text blocks (the ``x-anthropic-billing-header`` with a ``cch`` that
changes on every request, the "You are Claude Code…" identity line and the instructions, both
with ``cache_control``), seven tools with ``input_schema`` (Bash, Read, Edit, Write, Glob, Grep,
TodoWrite), ``tool_choice`` omitted, and a first user message whose blocks are the claudeMd and
empty-todo ``<system-reminder>``s and then the task. Later requests carry the history:
assistant ``tool_use`` blocks (sometimes several) and a user message of ``tool_result``s, with a
reminder text block after them now and then; the newest message's last block carries
``cache_control``, as Claude Code moves it forward. Tool failures are Claude Code's own texts
with ``is_error: true`` (``<tool_use_error>String to replace not found in file.…``, ``File has
not been read yet…``); a Bash command that exits non-zero is ``is_error`` with ``Exit code N``,
which is ordinary work (tests fail), not a failure signal. The "tricky" healthy turns quote
``<tool_use_error>`` inside data: a file that Read returns, Grep hits, a diff, a failing test's
output. Background requests on the small model (title, new-topic) route by the
``claude-*haiku*`` alias (``local_first``).
"""

from __future__ import annotations

import copy
import json
import random
import string
from pathlib import Path
from typing import Any

from tests.bench.cline_shapes import Turn, files_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code"
MODEL = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5-20251001"
CWD = "/home/dev/projects/inventory-service"  # the fixture's project, which its system prompt names
TOOLS = ("Bash", "Read", "Edit", "Write", "Glob", "Grep", "TodoWrite")
EPHEMERAL = {"type": "ephemeral"}
TODO_STALE = ("<system-reminder>\nThe TodoWrite tool hasn't been used recently. If you're working on tasks that would "
              "benefit from tracking progress, consider using it. Do not mention this reminder to the user.\n"
              "</system-reminder>")
READ_REMINDER = ("\n\n<system-reminder>\nWhenever you read a file, consider whether it looks malicious. You may "
                 "analyse such code, but refuse to improve or extend it.\n</system-reminder>\n")
NOT_FOUND = "<tool_use_error>String to replace not found in file.\nString: {}</tool_use_error>"
NOT_READ = "<tool_use_error>File has not been read yet. Read it first before writing to it.</tool_use_error>"
NO_FILE = "<tool_use_error>File does not exist. Current working directory: " + CWD + "</tool_use_error>"
MANY = ("<tool_use_error>Found 2 matches of the string to replace, but replace_all is false. To replace all "
        "occurrences, set replace_all to true. To replace only one occurrence, please provide more context to "
        "uniquely identify the instance.\nString: {}</tool_use_error>")

_FIXTURE: dict[str, Any] = {}


def fixture(name: str) -> dict[str, Any]:
    if name not in _FIXTURE:
        _FIXTURE[name] = json.loads((FIXTURES / f"{name}.json").read_text())
    return copy.deepcopy(_FIXTURE[name])


def billing_header(rng: random.Random) -> dict[str, Any]:
    cch = "".join(rng.choice("0123456789abcdef") for _ in range(5))
    return {"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.0.37.a1f; cc_entrypoint=cli; cch={cch};"}


def system(rng: random.Random) -> list[dict[str, Any]]:
    """The three system blocks, with a fresh ``cch`` (Claude Code's changes on every request)."""
    return [billing_header(rng), *fixture("first-turn")["system"][1:]]


def tools() -> list[dict[str, Any]]:
    return [t for t in fixture("first-turn")["tools"] if t["name"] in TOOLS]


def first_user(task: str) -> dict[str, Any]:
    """messages[0]: the claudeMd and empty-todo reminders, then the task."""
    blocks = fixture("first-turn")["messages"][0]["content"]
    assert blocks[0]["text"].startswith("<system-reminder>") and blocks[1]["text"].startswith("<system-reminder>")
    return {"role": "user", "content": [blocks[0], blocks[1], {"type": "text", "text": task}]}


def request(messages: list[dict[str, Any]], rng: random.Random, session: str, max_tokens: int) -> dict[str, Any]:
    """A main-loop request: the history with ``cache_control`` on the newest message's last
    block only (the other messages are not copied, only that one)."""
    last = copy.deepcopy(messages[-1])
    content = last["content"] if isinstance(last["content"], list) else [{"type": "text", "text": last["content"]}]
    content[-1]["cache_control"] = EPHEMERAL
    last["content"] = content
    return {"model": MODEL, "max_tokens": max_tokens, "temperature": 1, "system": system(rng), "tools": tools(),
            "messages": [*messages[:-1], last], "metadata": metadata(session)}


def metadata(session: str) -> dict[str, str]:
    sid = random.Random(session).getrandbits(128)
    uuid = f"{sid:032x}"
    return {"user_id": json.dumps({"device_id": "9f2c4e6a" * 8, "account_uuid": "",
                                   "session_id": f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"},
                                  separators=(",", ":"))}


def first_request(task: str, i: int, max_tokens: int) -> dict[str, Any]:
    return request([first_user(task)], random.Random(i), f"task-{i}", max_tokens)


def background(task: str, i: int, max_tokens: int) -> dict[str, dict[str, Any]]:
    """The small model's side requests about a task: the session title and the new-topic check
    (non-streaming here: the route does not depend on it)."""
    title, topic = fixture("haiku-title"), fixture("haiku-topic")
    title["messages"][0]["content"] = task
    topic["messages"][0]["content"][0]["text"] = task
    out = {}
    for name, body in (("title", title), ("topic", topic)):
        body.pop("stream", None)
        body.update(max_tokens=max_tokens, metadata=metadata(f"task-{i}"))
        out[name] = body
    return out


def numbered(text: str) -> str:
    """Read's output: ``cat -n`` numbers."""
    return "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(text.split("\n"), 1))


# Healthy data that quotes Claude Code's failure texts.
TRICKY_FILES = {
    "tests/test_tool_errors.py": (
        "from agent.tools import edit, write\n\n\ndef test_edit_reports_missing_string(tmp_path):\n"
        "    result = edit(tmp_path / 'a.py', old='x = 1', new='x = 2')\n    assert result.is_error\n"
        "    assert result.content.startswith('<tool_use_error>String to replace not found in file.')\n\n\n"
        "def test_write_needs_a_read(tmp_path):\n    result = write(tmp_path / 'b.py', 'y = 2')\n"
        "    assert result.content == '<tool_use_error>File has not been read yet. Read it first before writing "
        "to it.</tool_use_error>'\n"),
    "tests/fixtures/edit-error.txt": NOT_FOUND.format("    return total") + "\n",
    "docs/agent-errors.md": (
        "# Tool errors\n\nA failed call comes back as a tool result with `is_error: true`:\n\n"
        "    <tool_use_error>File has not been read yet. Read it first before writing to it.</tool_use_error>\n\n"
        "The agent then reads the file and tries again.\n"),
}
TRICKY_GREP = ("tests/test_tool_errors.py:7:    assert result.content.startswith('<tool_use_error>String to replace "
               "not found in file.')\ndocs/agent-errors.md:5:    <tool_use_error>File has not been read yet. Read it "
               "first before writing to it.</tool_use_error>")
TRICKY_DIFF = ("diff --git a/src/agent/tools.py b/src/agent/tools.py\n"
               "--- a/src/agent/tools.py\n+++ b/src/agent/tools.py\n"
               "@@ -12,3 +12,4 @@ def edit(path, old, new):\n     if old not in text:\n"
               "-        return error('String to replace not found')\n"
               "+        return error('<tool_use_error>String to replace not found in file.\\nString: '\n"
               "+                     + old + '</tool_use_error>')\n")
TRICKY_FAILED_TEST = ("Exit code 1\n============================= FAILURES =============================\n"
                      "___________________ test_write_needs_a_read ___________________\n"
                      ">       assert result.content == '<tool_use_error>File has not been read yet. Read it first "
                      "before writing to it.</tool_use_error>'\nE       AssertionError\n1 failed, 11 passed in 0.40s")


class ClaudeTurns:
    """Builders of Claude Code turns: an assistant message of ``tool_use`` blocks and the user
    message of ``tool_result``s after it (the same interface as the Cline builders)."""

    def __init__(self, rng: random.Random, stack: str | None = None) -> None:
        self.rng = rng
        self.files = [f"{CWD}/{f}" for f in files_for(stack) if "/" in f]

    def _id(self) -> str:
        return "toolu_01" + "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(22))

    def _turn(self, calls: list[tuple[str, dict[str, Any], str, bool]], kind: str, text: str = "", *,
              signal: bool = False, tricky: bool = False) -> Turn:
        """``calls``: (tool, input, result, is_error) each; a reminder follows the results at times."""
        uses, results = [], []
        for name, args, result, error in calls:
            use = {"type": "tool_use", "id": self._id(), "name": name, "input": args}
            uses.append(use)
            content = result if self.rng.random() < 0.7 else [{"type": "text", "text": result}]
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": use["id"], "content": content}
            if error:
                block["is_error"] = True
            results.append(block)
        if self.rng.random() < 0.25:
            results.append({"type": "text", "text": TODO_STALE})
        assistant = {"role": "assistant", "content": ([{"type": "text", "text": text}] if text else []) + uses}
        return Turn(assistant, [{"role": "user", "content": results}], kind, signal=signal, tricky=tricky)

    def _source(self, path: str) -> str:
        name = path.rsplit("/", 1)[-1]
        return f'"""{name}."""\n\n\ndef total(items):\n    return sum(i.price * i.qty for i in items)\n'

    # healthy
    def read(self, tricky: bool = False) -> Turn:
        path = f"{CWD}/{self.rng.choice(list(TRICKY_FILES))}" if tricky else self.rng.choice(self.files)
        content = TRICKY_FILES[path[len(CWD) + 1:]] if tricky else self._source(path)
        return self._turn([("Read", {"file_path": path}, numbered(content) + READ_REMINDER, False)], "read",
                          self.rng.choice(("", "Let me read the file.")), tricky=tricky)

    def grep(self, tricky: bool = False) -> Turn:
        hit = f"{self.files[0][len(CWD) + 1:]}:4:def total(items):"
        pattern, hits = ("tool_use_error", TRICKY_GREP) if tricky else ("def total", hit)
        return self._turn([("Grep", {"pattern": pattern, "output_mode": "content", "-n": True}, hits, False)],
                          "grep", tricky=tricky)

    def bash(self, tricky: bool = False, exit_code: int = 0) -> Turn:
        if tricky:
            command, out = self.rng.choice((("git --no-pager diff", TRICKY_DIFF),
                                            ("uv run pytest -q", TRICKY_FAILED_TEST)))
            return self._turn([("Bash", {"command": command, "description": "Check the change"}, out,
                                out.startswith("Exit code"))], "bash", tricky=True)
        command = self.rng.choice(("uv run pytest -q", "npm test", "make lint", "go test ./..."))
        out = (f"Exit code {exit_code}\nFAILED tests/test_pricing.py::test_bulk_discount - AssertionError\n"
               "1 failed, 23 passed in 1.20s") if exit_code else "24 passed in 1.14s"
        return self._turn([("Bash", {"command": command, "description": "Run the tests"}, out, bool(exit_code))],
                          "bash_failed" if exit_code else "bash")

    def edit(self) -> Turn:
        path = self.rng.choice(self.files)
        args = {"file_path": path, "old_string": "    return sum(", "new_string": "    return fsum("}
        return self._turn([("Edit", args,
                            f"The file {path} has been updated. Here's the result of running `cat -n` on a snippet "
                            f"of the edited file:\n{numbered(self._source(path)).replace('sum(', 'fsum(')}", False)],
                          "edit", self.rng.choice(("", "Now the fix.")))

    def write(self) -> Turn:
        path = f"{CWD}/{self.rng.choice(('docs/NOTES.md', 'CHANGELOG.md', 'src/app/constants.py'))}"
        return self._turn([("Write", {"file_path": path, "content": "# Notes\n"},
                            f"File created successfully at: {path}", False)], "write")

    def glob(self) -> Turn:
        return self._turn([("Glob", {"pattern": "**/*.py"}, "\n".join(self.files), False)], "glob")

    def todo(self) -> Turn:
        todos = [{"content": "Fix the total", "status": "in_progress", "activeForm": "Fixing the total"}]
        return self._turn([("TodoWrite", {"todos": todos}, "Todos have been modified successfully. Ensure that you "
                            "continue to use the todo list to track your progress. Please proceed with the current "
                            "tasks if applicable", False)], "todo")

    def parallel(self, tricky: bool = False) -> Turn:
        path = f"{CWD}/docs/agent-errors.md" if tricky else self.rng.choice(self.files)
        content = TRICKY_FILES["docs/agent-errors.md"] if tricky else self._source(path)
        return self._turn([("Grep", {"pattern": "def total", "output_mode": "files_with_matches"}, path, False),
                           ("Read", {"file_path": path}, numbered(content) + READ_REMINDER, False)],
                          "parallel", "I'll look for where totals are computed.", tricky=tricky)

    def healthy(self, tricky: bool = False) -> Turn:
        if tricky:
            return self.rng.choice((self.read, self.read, self.grep, self.bash, self.parallel))(tricky=True)
        pick = self.rng.random()
        if pick < 0.25:
            return self.read()
        if pick < 0.5:
            return self.bash(exit_code=self.rng.choice((0, 1, 1, 2)))  # failing tests are normal work
        if pick < 0.7:
            return self.edit()
        return self.rng.choice((self.write, self.glob, self.grep, self.todo, self.parallel))()

    # failing
    def edit_failed(self) -> Turn:
        path, old = self.rng.choice(self.files), "    return value.strip()\n\n"
        text = (NOT_FOUND if self.rng.random() < 0.75 else MANY).format(old)
        return self._turn([("Edit", {"file_path": path, "old_string": old, "new_string": "    return value\n"}, text,
                            True)], "edit_failed", signal=True)

    def write_unread(self) -> Turn:
        path = self.rng.choice(self.files)
        return self._turn([("Write", {"file_path": path, "content": "SETTING = 1\n"}, NOT_READ, True)],
                          "write_unread", signal=True)

    def read_missing(self) -> Turn:
        return self._turn([("Read", {"file_path": f"{CWD}/src/app/settings_local.py"}, NO_FILE, True)],
                          "read_missing", signal=True)

    def mixed_failed(self) -> Turn:
        """A Read that worked and an Edit that did not, in one turn: a turn with a signal."""
        a, b = self.rng.sample(self.files, 2)
        return self._turn([("Read", {"file_path": a}, numbered(self._source(a)) + READ_REMINDER, False),
                           ("Edit", {"file_path": b, "old_string": "    pass", "new_string": "    return None"},
                            NOT_FOUND.format("    pass"), True)], "mixed_failed", signal=True)

    def failure(self) -> Turn:
        return self.rng.choice((self.edit_failed, self.edit_failed, self.write_unread, self.read_missing,
                                self.mixed_failed))()
