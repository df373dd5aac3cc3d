"""Builders of Cline agent turns for the escalation replay: :class:`ClassicTurns` (the classic
extension: XML tool calls in the assistant's text, results as user text parts with fresh
environment details) and :class:`CliTurns` (the Cline CLI: native ``tool_calls``, ``role: "tool"``
JSON results). Each has ``healthy()`` turns (some "tricky": Cline's error texts inside data) and
``failure()`` turns that feed Cline's own failure texts back where Cline puts them.

The request shapes, :class:`~tests.bench.cline_shapes.Turn` and the tricky data are in
:mod:`tests.bench.cline_shapes`; the texts in :mod:`tests.bench.cline_texts`.
"""

from __future__ import annotations

import json
import random
from typing import Any

from tests.bench.cline_shapes import (
    Turn,
    environment_details,
    files_for,
    tricky_diff,
    tricky_docs,
    tricky_log,
    tricky_test_file,
    tricky_test_output,
)
from tests.bench.cline_texts import (
    CLI_REMINDER,
    COMPLETION_FEEDBACK,
    CWD,
    MISSING_PARAM,
    NO_TOOL_USED,
    SAVED,
    SEARCH_MISMATCH,
    TOO_MANY_MISTAKES,
    TOOL_ERROR,
)


def _classic_user(parts: list[str], n: int) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": p} for p in parts]
            + [{"type": "text", "text": environment_details(n)}]}


def _pyfile(rng: random.Random, name: str) -> str:
    """A small source file in the language its path says."""
    fn = rng.choice(["load_settings", "parse_row", "render_total", "build_query", "send_email"])
    if name.endswith((".ts", ".js")):
        camel = fn.split("_")[0] + "".join(w.title() for w in fn.split("_")[1:])
        return (f"import {{ logger }} from './lib/logger'\n\nexport function {camel}(value: string | null, "
                "strict = false): string | null {\n  if (value === null) return null\n"
                "  const result = value.trim()\n  if (strict && !result) throw new Error('empty value')\n"
                f"  logger.debug('{camel}', result)\n  return result\n}}\n")
    if name.endswith(".go"):
        camel = "".join(w.title() for w in fn.split("_"))
        return (f"package main\n\nimport (\n\t\"errors\"\n\t\"strings\"\n)\n\nfunc {camel}(value string, "
                "strict bool) (string, error) {\n\tresult := strings.TrimSpace(value)\n"
                "\tif strict && result == \"\" {\n\t\treturn \"\", errors.New(\"empty value\")\n\t}\n"
                "\treturn result, nil\n}\n")
    if not name.endswith(".py"):
        return f"# {name}\n\nname: app\nport: 8080\nlog_level: info\nfeatures:\n  - {fn}\n"
    return (f'"""{name}: helpers."""\n\nimport logging\n\nlog = logging.getLogger(__name__)\n\n\n'
            f"def {fn}(value, *, strict=False):\n    if value is None:\n        return None\n"
            f"    result = str(value).strip()\n    if strict and not result:\n"
            f"        raise ValueError('empty value')\n    log.debug('{fn} %s', result)\n    return result\n")


def _json(value: Any) -> str:
    """Compact JSON, as the Cline CLI writes tool arguments and results."""
    return json.dumps(value, separators=(",", ":"))


class ClassicTurns:
    """Builders of classic-extension turns (XML tool calls in the assistant's text)."""

    def __init__(self, rng: random.Random, stack: str | None = None) -> None:
        self.rng = rng
        self.files = [f for f in files_for(stack) if "/" in f]
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def _path(self) -> str:
        return self.rng.choice(self.files)

    # healthy
    def read_file(self, tricky: bool = False) -> Turn:
        n, path = self._next(), self._path()
        if tricky:
            maker = self.rng.choice((tricky_test_file, tricky_docs, tricky_log))
            path = {tricky_test_file: "tests/test_agent_loop.py", tricky_docs: "docs/agent-errors.md",
                    tricky_log: "logs/agent.log"}[maker]
            body = maker()
        else:
            body = _pyfile(self.rng, path)
        return Turn({"role": "assistant", "content": f"<thinking>\nI need to look at {path} first.\n</thinking>\n\n"
                     f"<read_file>\n<path>{path}</path>\n</read_file>"},
                    [_classic_user([f"[read_file for '{path}'] Result:", body], n)], "read_file", tricky=tricky)

    def execute_command(self, tricky: bool = False, exit_code: int = 0) -> Turn:
        n = self._next()
        command = self.rng.choice(["pytest -q", "npm test", "make check", "go test ./..."])
        if tricky:
            output = self.rng.choice((tricky_test_output, tricky_log, tricky_diff))()
            if output.startswith("diff"):
                command = "git --no-pager diff src/diff/apply.ts"
        elif exit_code:
            output = (f"FAILED tests/test_routes.py::test_create - AssertionError: assert 500 == 201\n"
                      f"1 failed, 23 passed in 1.20s\nCommand exited with code {exit_code}")
        else:
            output = "24 passed in 1.14s"
        return Turn({"role": "assistant", "content": f"<execute_command>\n<command>{command}</command>\n"
                     "<requires_approval>false</requires_approval>\n</execute_command>"},
                    [_classic_user([f"[execute_command for '{command}'] Result:",
                                    f"Command executed.\nOutput:\n{output}"], n)],
                    "execute_command", tricky=tricky)

    def replace_in_file(self, tricky: bool = False) -> Turn:
        n, path = self._next(), self._path()
        content = tricky_diff().replace("\n-", "\n").replace("\n+", "\n") if tricky else _pyfile(self.rng, path)
        if tricky:
            path = "src/diff/apply.ts"
        diff = "------- SEARCH\n    return result\n=======\n    return result or None\n+++++++ REPLACE"
        return Turn({"role": "assistant", "content": f"<replace_in_file>\n<path>{path}</path>\n<diff>\n{diff}\n"
                     "</diff>\n</replace_in_file>"},
                    [_classic_user([f"[replace_in_file for '{path}'] Result:",
                                    SAVED.format(path=path, content=content)], n)], "replace_in_file", tricky=tricky)

    def write_to_file(self) -> Turn:
        n = self._next()
        path = self.rng.choice(["docs/NOTES.md", "src/app/constants.py", "CHANGELOG.md"])
        content = "# Notes\n\n- renamed the setting\n"
        return Turn({"role": "assistant", "content": f"<write_to_file>\n<path>{path}</path>\n<content>\n{content}"
                     "</content>\n</write_to_file>"},
                    [_classic_user([f"[write_to_file for '{path}'] Result:", SAVED.format(path=path, content=content)],
                                   n)], "write_to_file")

    def search_files(self, tricky: bool = False) -> Turn:
        n = self._next()
        # A regex with brackets makes Cline's own header unparseable ("[search_files for '\[ERROR\]...'").
        regex = r"\[ERROR\] You did not use a tool" if tricky else "def load_settings"
        hits = ("Found 2 results.\n\ntests/test_agent_loop.py\n│----\n"
                "│        \"[ERROR] You did not use a tool in your previous response! Please retry with a tool use.\"\n"
                "│----\n\nsrc/agent/prompts.py\n│----\n│NO_TOOL = \"[ERROR] You did not use a tool in your previous "
                "response!\"\n│----") if tricky else \
            "Found 1 result.\n\nsrc/app/config.py\n│----\n│def load_settings(value, *, strict=False):\n│----"
        return Turn({"role": "assistant", "content": f"<search_files>\n<path>.</path>\n<regex>{regex}</regex>\n"
                     "<file_pattern>*.py</file_pattern>\n</search_files>"},
                    [_classic_user([f"[search_files for '{regex}' in '*.py'] Result:", hits], n)],
                    "search_files", tricky=tricky)

    def list_files(self) -> Turn:
        n = self._next()
        return Turn({"role": "assistant", "content": "<list_files>\n<path>src</path>\n<recursive>true</recursive>\n"
                     "</list_files>"},
                    [_classic_user(["[list_files for 'src'] Result:", "\n".join(self.files)], n)], "list_files")

    def ask_followup(self) -> Turn:
        n = self._next()
        q = "Should I also update the tests?"
        return Turn({"role": "assistant", "content": f"<ask_followup_question>\n<question>{q}</question>\n"
                     "<options>\n[\"Yes\", \"No\"]\n</options>\n</ask_followup_question>"},
                    [_classic_user([f"[ask_followup_question for '{q}'] Result:", "<answer>\nYes\n</answer>"], n)],
                    "ask_followup_question")

    def healthy(self, tricky: bool = False) -> Turn:
        if tricky:
            return self.rng.choice((self.read_file, self.execute_command, self.replace_in_file,
                                    self.search_files))(tricky=True)
        pick = self.rng.random()
        if pick < 0.3:
            return self.read_file()
        if pick < 0.45:
            return self.execute_command(exit_code=self.rng.choice((0, 0, 1)))  # a failing test run is normal work
        if pick < 0.65:
            return self.replace_in_file()
        if pick < 0.75:
            return self.write_to_file()
        if pick < 0.85:
            return self.search_files()
        if pick < 0.95:
            return self.list_files()
        return self.ask_followup()

    # failing
    def no_tool_used(self) -> Turn:
        n = self._next()
        return Turn({"role": "assistant", "content": "I'll update the configuration so the value is read correctly."},
                    [_classic_user([NO_TOOL_USED], n)], "no_tool_used", signal=True)

    def search_mismatch(self) -> Turn:
        n, path = self._next(), self._path()
        search = "    return value.strip()"
        error = TOOL_ERROR.format(SEARCH_MISMATCH.format(search=search, content=_pyfile(self.rng, path)))
        header = f"[replace_in_file for '{path}'] Result:"
        # Cline sends the header and the body as two parts; some builds join them.
        parts = [header, error] if self.rng.random() < 0.7 else [header + "\n" + error]
        return Turn({"role": "assistant", "content": f"<replace_in_file>\n<path>{path}</path>\n<diff>\n------- SEARCH\n"
                     f"{search}\n=======\n    return value.strip().lower()\n+++++++ REPLACE\n</diff>\n"
                     "</replace_in_file>"}, [_classic_user(parts, n)], "search_mismatch", signal=True)

    def missing_parameter(self) -> Turn:
        n = self._next()
        text = MISSING_PARAM.format("path")
        if self.rng.random() < 0.5:
            text = TOOL_ERROR.format(text)  # how Cline's sayAndCreateMissingParamError wraps it
        return Turn({"role": "assistant", "content": "<write_to_file>\n<content>\nSETTING = 1\n</content>\n"
                     "</write_to_file>"}, [_classic_user(["[write_to_file] Result:", text], n)],
                    "missing_parameter", signal=True)

    def read_failed(self) -> Turn:
        n = self._next()
        path = "src/app/settings_local.py"
        return Turn({"role": "assistant", "content": f"<read_file>\n<path>{path}</path>\n</read_file>"},
                    [_classic_user([f"[read_file for '{path}'] Result:",
                                    TOOL_ERROR.format(f"Error reading file: File not found: {CWD}/{path}")], n)],
                    "tool_failed", signal=True)

    def completion_rejected(self) -> Turn:
        n = self._next()
        return Turn({"role": "assistant", "content": "<attempt_completion>\n<result>\nI fixed the issue.\n</result>\n"
                     "</attempt_completion>"},
                    [_classic_user(["[attempt_completion] Result:", COMPLETION_FEEDBACK.format("that's wrong")], n)],
                    "completion_rejected", signal=True)

    def too_many_mistakes(self, after_failure: bool = False) -> Turn:
        """Cline's alarm; with ``after_failure`` it follows a failed edit in the same user message."""
        n = self._next()
        parts = [TOO_MANY_MISTAKES.format("please stop")]
        if after_failure:
            path = self._path()
            parts = [f"[replace_in_file for '{path}'] Result:",
                     TOOL_ERROR.format(SEARCH_MISMATCH.format(search="    pass", content=_pyfile(self.rng, path))),
                     *parts]
            assistant = (f"<replace_in_file>\n<path>{path}</path>\n<diff>\n------- SEARCH\n    pass\n=======\n"
                         "    return None\n+++++++ REPLACE\n</diff>\n</replace_in_file>")
        else:
            assistant = "I am not sure how to continue; the change looks correct to me."
        return Turn({"role": "assistant", "content": assistant}, [_classic_user(parts, n)],
                    "too_many_mistakes", signal=True, alarm=True)

    def failure(self) -> Turn:
        return self.rng.choice((self.no_tool_used, self.search_mismatch, self.search_mismatch, self.missing_parameter,
                                self.read_failed, self.completion_rejected))()


class CliTurns:
    """Builders of Cline CLI turns (native tool calls, ``role: "tool"`` JSON results)."""

    def __init__(self, rng: random.Random, stack: str | None = None) -> None:
        self.rng = rng
        self.files = [f"{CWD}/{f}" for f in files_for(stack) if "/" in f]
        self.calls = 0

    def _call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"id": f"call_{self.calls}", "type": "function",
                "function": {"name": name, "arguments": _json(args)}}

    @staticmethod
    def _result(call: dict[str, Any], query: str, result: str, success: bool = True,
                error: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "result": result}
        if error is not None:
            body["error"] = error
        body["success"] = success
        return {"role": "tool", "tool_call_id": call["id"], "content": _json(body)}

    def _assistant(self, calls: list[dict[str, Any]], text: str = "") -> dict[str, Any]:
        return {"role": "assistant", "content": text or "", "tool_calls": calls}

    def read_files(self, tricky: bool = False) -> Turn:
        path = self.rng.choice(self.files)
        if tricky:
            maker = self.rng.choice((tricky_test_file, tricky_docs, tricky_log))
            path = f"{CWD}/" + {tricky_test_file: "tests/test_agent_loop.py", tricky_docs: "docs/agent-errors.md",
                                tricky_log: "logs/agent.log"}[maker]
            content = maker()
        else:
            content = _pyfile(self.rng, path)
        call = self._call("read_files", {"files": [{"path": path}]})
        return Turn(self._assistant([call]), [self._result(call, f"read:{path}", content)], "read_files",
                    tricky=tricky)

    def run_commands(self, tricky: bool = False, exit_code: int = 0) -> Turn:
        command = self.rng.choice(["pytest -q", "npm test", "go test ./...", "make lint"])
        call = self._call("run_commands", {"commands": [command]})
        if tricky:
            out = self.rng.choice((tricky_test_output, tricky_log, tricky_diff))()
            result = self._result(call, command, out, success=exit_code == 0,
                                  error=None if exit_code == 0 else f"Command exited with code {exit_code}")
        elif exit_code:
            result = self._result(call, command, "1 failed, 23 passed in 1.20s", success=False,
                                  error=f"Command exited with code {exit_code}")
        else:
            result = self._result(call, command, "24 passed in 1.14s")
        return Turn(self._assistant([call]), [result], "run_commands", tricky=tricky)

    def editor(self) -> Turn:
        path = self.rng.choice(self.files)
        call = self._call("editor", {"path": path, "old_text": "return result", "new_text": "return result or None"})
        return Turn(self._assistant([call], self.rng.choice(("", "Working on it."))),
                    [self._result(call, f"edit:{path}", f"Edited {path}: replaced 1 occurrence")], "editor")

    def parallel(self, tricky: bool = False) -> Turn:
        a, b = self.rng.sample(self.files, 2)
        calls = [self._call("read_files", {"files": [{"path": a}, {"path": b}]}),
                 self._call("run_commands", {"commands": ["git --no-pager status --short"]})]
        content = tricky_diff() if tricky else _pyfile(self.rng, a)
        return Turn(self._assistant(calls, "Reading the two modules and checking the tree."),
                    [self._result(calls[0], f"read:{a},{b}", content),
                     self._result(calls[1], "git --no-pager status --short", " M src/app/config.py\n")],
                    "parallel", tricky=tricky)

    def healthy(self, tricky: bool = False) -> Turn:
        if tricky:
            return self.rng.choice((self.read_files, self.run_commands, self.parallel))(tricky=True)
        pick = self.rng.random()
        if pick < 0.35:
            return self.read_files()
        if pick < 0.55:
            return self.run_commands(exit_code=self.rng.choice((0, 0, 1)))  # a failing test run is normal work
        if pick < 0.85:
            return self.editor()
        return self.parallel()

    # failing
    def editor_failed(self) -> Turn:
        path = self.rng.choice(self.files)
        call = self._call("editor", {"path": path, "old_text": "return value.strip()", "new_text": "return value"})
        return Turn(self._assistant([call]),
                    [self._result(call, f"edit:{path}", "", success=False,
                                  error=f"old_text was not found in {path}; no changes were made")],
                    "editor_failed", signal=True)

    def read_failed(self) -> Turn:
        path = f"{CWD}/src/app/settings_local.py"
        call = self._call("read_files", {"files": [{"path": path}]})
        return Turn(self._assistant([call]),
                    [self._result(call, f"read:{path}", "", success=False,
                                  error=f"ENOENT: no such file or directory, open '{path}'")],
                    "read_failed", signal=True)

    def text_only(self, text: str = "I have made the change; the README now says hello.") -> Turn:
        return Turn({"role": "assistant", "content": text}, [{"role": "user", "content": CLI_REMINDER}],
                    "text_only", signal=True)

    def mixed_failed(self) -> Turn:
        """A read that worked and an edit that did not, in one turn: a turn with a signal."""
        a, b = self.rng.sample(self.files, 2)
        calls = [self._call("read_files", {"files": [{"path": a}]}),
                 self._call("editor", {"path": b, "old_text": "    pass", "new_text": "    return None"})]
        return Turn(self._assistant(calls),
                    [self._result(calls[0], f"read:{a}", _pyfile(self.rng, a)),
                     self._result(calls[1], f"edit:{b}", "", success=False,
                                  error=f"old_text was not found in {b}; no changes were made")],
                    "mixed_failed", signal=True)

    def failure(self) -> Turn:
        return self.rng.choice((self.editor_failed, self.editor_failed, self.read_failed, self.text_only,
                                self.mixed_failed))()
