"""Cline-shaped requests for the benchmarks: the two shapes Cline sends, and the pieces that
replayed agent conversations are built from.

- **classic** (the VS Code extension with a GLM model id): a long system prompt that describes
  the tools in XML, a first user message of two text parts (``<task>…</task>`` and
  ``<environment_details>…</environment_details>``), no ``tools``; tool calls are XML in the
  assistant's text, and tool results come back as user messages whose parts are
  ``[tool for 'x'] Result:``, the result, and fresh environment details.
- **cli** (the Cline CLI 3.0.65, captured in ``tests/fixtures/cline-cli-3.0.65``): request-1's
  body: its system prompt, the task as a plain user message (or ``<user_input mode="act">``),
  the ``[SYSTEM]`` reminder, and four native tools; tool calls are ``tool_calls`` and results
  are ``role: "tool"`` messages carrying ``{"query", "result", "success"}`` JSON.

This module holds the first requests of both shapes (the project files, Cline's environment
details, the classic first messages, the CLI's request-1 with a new task), the :class:`Turn`,
and the "tricky" healthy data. Cline's verbatim texts and the classic system prompt are in
:mod:`tests.bench.cline_texts`; the builders of each shape's turns (:class:`ClassicTurns`,
:class:`CliTurns`) in :mod:`tests.bench.cline_turns`.

A :class:`Turn` is one assistant message and everything the agent sent back after it, with
what it means for escalation: ``signal`` (the feedback is one of Cline's own failure texts at a
place where Cline puts them) and ``alarm`` (Cline's "You seem to be having trouble proceeding").
The "tricky" healthy pieces carry those same texts *inside* file contents, command output and
diffs, where they are data, not feedback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import attrs

from tests.bench.cline_texts import CLASSIC_SYSTEM, CWD

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = (ROOT / "tests" / "fixtures" / "cline-cli-3.0.65", Path("/work/shared/fixtures/cline-cli-3.0.65"))

PROJECT_FILES = {
    "python": ["pyproject.toml", "README.md", "src/app/__init__.py", "src/app/main.py", "src/app/config.py",
               "src/app/models.py", "src/app/routes.py", "tests/conftest.py", "tests/test_routes.py"],
    "js": ["package.json", "README.md", "tsconfig.json", "src/index.ts", "src/server.ts", "src/routes/users.ts",
           "src/lib/db.ts", "tests/users.test.ts", "vite.config.ts"],
    "other": ["README.md", "Makefile", "Dockerfile", "docs/setup.md", "scripts/deploy.sh", "config/app.yaml",
              "src/main.go", "src/handler.go", "src/handler_test.go"],
}
PY_STACKS = {"django", "fastapi", "flask", "python", "pytest", "celery", "airflow", "pandas", "numpy",
             "pytorch", "sklearn", "sqlalchemy", "dbt", "spark"}
JS_STACKS = {"node", "express", "nestjs", "nextjs", "react", "react-native", "vue", "angular", "svelte",
             "typescript", "javascript", "jest", "vitest", "vite", "webpack", "electron", "bun", "deno",
             "cypress", "playwright", "tailwind", "css", "html"}


def files_for(stack: str | None) -> list[str]:
    return PROJECT_FILES["python" if stack in PY_STACKS else "js" if stack in JS_STACKS else "other"]


def environment_details(n: int, stack: str | None = None, first: bool = False) -> str:
    """Cline's environment details: visible and open tabs, time, mode, and on the first turn the
    working directory's files. ``n`` varies the clock (Cline's changes every turn)."""
    files = files_for(stack)
    lines = ["<environment_details>", "# VSCode Visible Files", files[3], "", "# VSCode Open Tabs",
             ", ".join(files[2:5]), "", "# Current Time",
             f"1/12/2026, {9 + n // 60 % 12}:{n % 60:02d}:{(7 * n) % 60:02d} AM (Europe/Berlin, UTC+1:00)"]
    if first:
        lines += ["", f"# Current Working Directory ({CWD}) Files", *files]
    lines += ["", "# Context Window Usage", f"{12_000 + 900 * n:,} / 65,536 tokens used ({(12 + n) % 100}%)", "",
              "# Current Mode", "ACT MODE", "</environment_details>"]
    return "\n".join(lines)


def classic_first_messages(task: str, stack: str | None = None) -> list[dict[str, Any]]:
    return [{"role": "system", "content": CLASSIC_SYSTEM},
            {"role": "user", "content": [{"type": "text", "text": f"<task>\n{task}\n</task>"},
                                         {"type": "text", "text": environment_details(0, stack, first=True)}]}]


def load_cli_request() -> dict[str, Any]:
    """request-1's body (the repository's copy, or the shared one)."""
    for folder in FIXTURES:
        path = folder / "request-1-first-turn.json"
        if path.exists():
            return json.loads(path.read_text())["body"]
    raise FileNotFoundError("request-1-first-turn.json not found in " + ", ".join(map(str, FIXTURES)))


_CLI_BODY: dict[str, Any] | None = None


def cli_body(task: str, wrap: bool = False) -> dict[str, Any]:
    """request-1 with the user task replaced (optionally ``<user_input mode="act">``); the
    system prompt, the [SYSTEM] reminder, the four native tools and ``tool_choice`` kept."""
    global _CLI_BODY
    if _CLI_BODY is None:
        _CLI_BODY = load_cli_request()
    body = copy.deepcopy(_CLI_BODY)
    assert body["messages"][1]["role"] == "user" and body["messages"][2]["content"].startswith("[SYSTEM]")
    body["messages"][1]["content"] = f'<user_input mode="act">{task}</user_input>' if wrap else task
    return body


# --- turns ---------------------------------------------------------------------------------------
@attrs.define
class Turn:
    """One assistant message and what the agent sent back after it."""

    assistant: dict[str, Any]
    feedback: list[dict[str, Any]]
    kind: str  # what it is, for reports: "read_file", "search_mismatch", ...
    signal: bool = False  # a failure text where Cline puts its feedback
    alarm: bool = False  # "You seem to be having trouble proceeding"
    tricky: bool = False  # healthy, but Cline's error texts appear inside data



# Healthy data that contains Cline's own feedback texts, never at the start of what the agent wrote.
def tricky_test_file() -> str:
    return ('import pytest\n\nfrom agent.loop import next_prompt, Feedback\n\n\n'
            'def test_plain_answer_gets_tool_reminder():\n'
            '    reply = next_prompt(last_response="I will now edit the file.")\n'
            '    assert reply.text.startswith(\n'
            '        "[ERROR] You did not use a tool in your previous response! Please retry with a tool use."\n'
            '    )\n\n\n'
            'def test_three_mistakes_ask_the_user():\n'
            '    fb = Feedback(mistakes=3)\n'
            '    assert "You seem to be having trouble proceeding" in fb.render()\n')


def tricky_log() -> str:
    return ("2026-01-12 09:14:02,113 INFO  agent: run 4812 started (model=glm-4.7)\n"
            "2026-01-12 09:14:05,870 INFO  agent: tool replace_in_file on src/app/config.py\n"
            "2026-01-12 09:14:05,871 WARN  agent: tool result: The tool execution failed with the following error:\n"
            "<error>\nThe SEARCH block:\n    DEBUG = True\n...does not match anything in the file.\n</error>\n"
            "2026-01-12 09:14:09,002 INFO  agent: retry succeeded\n"
            "2026-01-12 09:14:12,540 INFO  agent: user said: The user has provided feedback on the results.\n"
            "2026-01-12 09:14:15,100 INFO  agent: run 4812 finished\n")


def tricky_diff() -> str:
    return ("diff --git a/src/diff/apply.ts b/src/diff/apply.ts\nindex 3f1c2aa..9b0e4d1 100644\n"
            "--- a/src/diff/apply.ts\n+++ b/src/diff/apply.ts\n@@ -41,7 +41,8 @@ export function applyBlock(src: string, b: Block) {\n"  # noqa: E501
            "   const at = src.indexOf(b.search)\n   if (at < 0) {\n"
            "-    throw new Error(`The SEARCH block:\\n${b.search}\\n...does not match anything in the file.`)\n"
            "+    const hint = closestMatch(src, b.search)\n"
            "+    throw new Error(`The SEARCH block:\\n${b.search}\\n...does not match anything in the file.${hint}`)\n"
            "   }\n   return src.slice(0, at) + b.replace + src.slice(at + b.search.length)\n")


def tricky_test_output() -> str:
    return ("============================= test session starts ==============================\n"
            "collected 14 items\n\ntests/test_prompts.py ......F.......                                      [100%]\n\n"
            "=================================== FAILURES ===================================\n"
            "______________________ test_cli_reminder_after_text_answer ______________________\n"
            "    def test_cli_reminder_after_text_answer():\n"
            "        msg = reminder(tools=['submit_and_exit'])\n"
            ">       assert msg == \"[SYSTEM] This run is not complete until you call one of these terminal completion tools: submit_and_exit.\"\n"  # noqa: E501
            "E       AssertionError: assert '[SYSTEM] This run is not complete until you call' == ...\n"
            "E         The tool execution failed with the following error\n"
            "=========================== short test summary info ============================\n"
            "FAILED tests/test_prompts.py::test_cli_reminder_after_text_answer - AssertionError\n"
            "========================= 1 failed, 13 passed in 0.41s =========================\n")


def tricky_docs() -> str:
    return ("# Agent error messages\n\nThe agent answers the model with fixed texts when something goes wrong.\n\n"
            "| situation | text |\n|---|---|\n"
            "| no tool in the answer | `[ERROR] You did not use a tool in your previous response!` |\n"
            "| a parameter is missing | `Missing value for required parameter 'path'.` |\n"
            "| three mistakes in a row | `You seem to be having trouble proceeding.` |\n"
            "| the user rejects the result | `The user has provided feedback on the results.` |\n")


TRICKY = (tricky_test_file, tricky_log, tricky_diff, tricky_test_output, tricky_docs)
