# ruff: noqa: E501  (the system prompt below is prose, one paragraph per line, as Cline writes it)
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

A :class:`Turn` is one assistant message and everything the agent sent back after it, with
what it means for escalation: ``signal`` (the feedback is one of Cline's own failure texts at a
place where Cline puts them) and ``alarm`` (Cline's "You seem to be having trouble proceeding").
The "tricky" healthy pieces carry those same texts *inside* file contents, command output and
diffs, where they are data, not feedback.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = (ROOT / "tests" / "fixtures" / "cline-cli-3.0.65", Path("/work/shared/fixtures/cline-cli-3.0.65"))
CWD = "/home/user/project"

# --- Cline's own texts (classic extension, src/core/prompts/responses.ts, and the CLI) ------------
TOOL_REMINDER = """# Reminder: Instructions for Tool Use

Tool uses are formatted using XML-style tags. The tool name is enclosed in opening and closing tags, and each parameter is similarly enclosed within its own set of tags. Here's the structure:

<tool_name>
<parameter1_name>value1</parameter1_name>
<parameter2_name>value2</parameter2_name>
...
</tool_name>

For example:

<attempt_completion>
<result>
I have completed the task...
</result>
</attempt_completion>

Always adhere to this format for all tool uses to ensure proper parsing and execution."""
NO_TOOL_USED = ("[ERROR] You did not use a tool in your previous response! Please retry with a tool use.\n\n"
                + TOOL_REMINDER + "\n\n# Next Steps\n\nIf you have completed the user's task, use the "
                "attempt_completion tool. \nIf you require additional information from the user, use the "
                "ask_followup_question tool. \nOtherwise, if you have not completed the task and do not need "
                "additional information, then proceed with the next step of the task. \n(This is an automated "
                "message, so do not respond to it conversationally.)")
TOOL_ERROR = "The tool execution failed with the following error:\n<error>\n{}\n</error>"
SEARCH_MISMATCH = ("The SEARCH block:\n{search}\n...does not match anything in the file.\n\nThis is likely because "
                   "the SEARCH block content doesn't match exactly with what's in the file, or if you used "
                   "multiple SEARCH/REPLACE blocks they may not have been in the order they appear in the file. "
                   "(Please also ensure that when using the replace_in_file tool, Do NOT add extra characters to "
                   "the markers (e.g., ------- SEARCH> is INVALID). Do NOT forget to use the closing "
                   "+++++++ REPLACE marker. Do NOT modify the marker format in any way. Malformed XML will cause "
                   "complete tool failure and break the entire editing process.)\n\nThe file was reverted to its "
                   "original state:\n\n<file>\n{content}\n</file>\n\nNow that you have the latest state of the "
                   "file, try the operation again with fewer, more precise SEARCH blocks.")
MISSING_PARAM = "Missing value for required parameter '{}'. Please retry with complete response.\n\n" + TOOL_REMINDER
TOO_MANY_MISTAKES = ("You seem to be having trouble proceeding. The user has provided the following feedback to "
                     "help guide you:\n<feedback>\n{}\n</feedback>")
COMPLETION_FEEDBACK = ("The user has provided feedback on the results. Consider their input to continue the task, "
                       "and then attempt completion again.\n<feedback>\n{}\n</feedback>")
SAVED = ("The content was successfully saved to {path}.\n\nHere is the full, updated content of the file that was "
         "saved:\n\n<final_file_content path=\"{path}\">\n{content}\n</final_file_content>\n\nIMPORTANT: For any "
         "future changes to this file, use the final_file_content shown above as your reference. This content "
         "reflects the current state of the file, including any auto-formatting (e.g., if you used single quotes "
         "but the formatter converted them to double quotes). Always base your SEARCH/REPLACE operations on this "
         "final version to ensure accuracy.\n\n")
CLI_REMINDER = ("[SYSTEM] This run is not complete until you call one of these terminal completion tools: "
                "submit_and_exit. Continue working if requirements are not met. If the task is complete, call the "
                "appropriate terminal completion tool now.")

# --- the classic system prompt (compact, but with Cline's sections and XML tool descriptions) ---
CLASSIC_SYSTEM = f"""You are Cline, a highly skilled software engineer with extensive knowledge in many programming languages, frameworks, design patterns, and best practices.

====

TOOL USE

You have access to a set of tools that are executed upon the user's approval. You can use one tool per message, and will receive the result of that tool use in the user's response. You use tools step-by-step to accomplish a given task, with each tool use informed by the result of the previous tool use.

# Tool Use Formatting

Tool use is formatted using XML-style tags. The tool name is enclosed in opening and closing tags, and each parameter is similarly enclosed within its own set of tags. Here's the structure:

<tool_name>
<parameter1_name>value1</parameter1_name>
<parameter2_name>value2</parameter2_name>
...
</tool_name>

For example:

<read_file>
<path>src/main.js</path>
</read_file>

Always adhere to this format for the tool use to ensure proper parsing and execution.

# Tools

## execute_command
Description: Request to execute a CLI command on the system. Use this when you need to perform system operations or run specific commands to accomplish any step in the user's task. You must tailor your command to the user's system and provide a clear explanation of what the command does. For command chaining, use the appropriate chaining syntax for the user's shell. Prefer to execute complex CLI commands over creating executable scripts, as they are more flexible and easier to run. Commands will be executed in the current working directory: {CWD}
Parameters:
- command: (required) The CLI command to execute. This should be valid for the current operating system. Ensure the command is properly formatted and does not contain any harmful instructions.
- requires_approval: (required) A boolean indicating whether this command requires explicit user approval before execution in case the user has auto-approve mode enabled. Set to 'true' for potentially impactful operations like installing/uninstalling packages, deleting/overwriting files, system configuration changes, network operations, or any commands that could have unintended side effects. Set to 'false' for safe operations like reading files/directories, running development servers, building projects, and other non-destructive operations.
Usage:
<execute_command>
<command>Your command here</command>
<requires_approval>true or false</requires_approval>
</execute_command>

## read_file
Description: Request to read the contents of a file at the specified path. Use this when you need to examine the contents of an existing file you do not know the contents of, for example to analyze code, review text files, or extract information from configuration files. Automatically extracts raw text from PDF and DOCX files. May not be suitable for other types of binary files, as it returns the raw content as a string.
Parameters:
- path: (required) The path of the file to read (relative to the current working directory {CWD})
Usage:
<read_file>
<path>File path here</path>
</read_file>

## write_to_file
Description: Request to write content to a file at the specified path. If the file exists, it will be overwritten with the provided content. If the file doesn't exist, it will be created. This tool will automatically create any directories needed to write the file.
Parameters:
- path: (required) The path of the file to write to (relative to the current working directory {CWD})
- content: (required) The content to write to the file. ALWAYS provide the COMPLETE intended content of the file, without any truncation or omissions. You MUST include ALL parts of the file, even if they haven't been modified.
Usage:
<write_to_file>
<path>File path here</path>
<content>
Your file content here
</content>
</write_to_file>

## replace_in_file
Description: Request to replace sections of content in an existing file using SEARCH/REPLACE blocks that define exact changes to specific parts of the file. This tool should be used when you need to make targeted changes to specific parts of a file.
Parameters:
- path: (required) The path of the file to modify (relative to the current working directory {CWD})
- diff: (required) One or more SEARCH/REPLACE blocks following this exact format:
  ```
  ------- SEARCH
  [exact content to find]
  =======
  [new content to replace with]
  +++++++ REPLACE
  ```
  Critical rules:
  1. SEARCH content must match the associated file section to find EXACTLY:
     * Match character-for-character including whitespace, indentation, line endings
     * Include all comments, docstrings, etc.
  2. SEARCH/REPLACE blocks will ONLY replace the first match occurrence.
     * Including multiple unique SEARCH/REPLACE blocks if you need to make multiple changes.
     * Include *just* enough lines in each SEARCH section to uniquely match each set of lines that need to change.
     * When using multiple SEARCH/REPLACE blocks, list them in the order they appear in the file.
  3. Keep SEARCH/REPLACE blocks concise:
     * Break large SEARCH/REPLACE blocks into a series of smaller blocks that each change a small portion of the file.
     * Include just the changing lines, and a few surrounding lines if needed for uniqueness.
     * Do not include long runs of unchanging lines in SEARCH/REPLACE blocks.
     * Each line must be complete. Never truncate lines mid-way through as this can cause matching failures.
  4. Special operations:
     * To move code: Use two SEARCH/REPLACE blocks (one to delete from original + one to insert at new location)
     * To delete code: Use empty REPLACE section
Usage:
<replace_in_file>
<path>File path here</path>
<diff>
Search and replace blocks here
</diff>
</replace_in_file>

## search_files
Description: Request to perform a regex search across files in a specified directory, providing context-rich results. This tool searches for patterns or specific content across multiple files, displaying each match with encapsulating context.
Parameters:
- path: (required) The path of the directory to search in (relative to the current working directory {CWD}). This directory will be recursively searched.
- regex: (required) The regular expression pattern to search for. Uses Rust regex syntax.
- file_pattern: (optional) Glob pattern to filter files (e.g., '*.ts' for TypeScript files). If not provided, it will search all files (*).
Usage:
<search_files>
<path>Directory path here</path>
<regex>Your regex pattern here</regex>
<file_pattern>file pattern here (optional)</file_pattern>
</search_files>

## list_files
Description: Request to list files and directories within the specified directory. If recursive is true, it will list all files and directories recursively. If recursive is false or not provided, it will only list the top-level contents. Do not use this tool to confirm the existence of files you may have created, as the user will let you know if the files were created successfully or not.
Parameters:
- path: (required) The path of the directory to list contents for (relative to the current working directory {CWD})
- recursive: (optional) Whether to list files recursively. Use true for recursive listing, false or omit for top-level only.
Usage:
<list_files>
<path>Directory path here</path>
<recursive>true or false (optional)</recursive>
</list_files>

## list_code_definition_names
Description: Request to list definition names (classes, functions, methods, etc.) used in source code files at the top level of the specified directory. This tool provides insights into the codebase structure and important constructs, encapsulating high-level concepts and relationships that are crucial for understanding the overall architecture.
Parameters:
- path: (required) The path of the directory (relative to the current working directory {CWD}) to list top level source code definitions for.
Usage:
<list_code_definition_names>
<path>Directory path here</path>
</list_code_definition_names>

## use_mcp_tool
Description: Request to use a tool provided by a connected MCP server. Each MCP server can provide multiple tools with different capabilities. Tools have defined input schemas that specify required and optional parameters.
Parameters:
- server_name: (required) The name of the MCP server providing the tool
- tool_name: (required) The name of the tool to execute
- arguments: (required) A JSON object containing the tool's input parameters, following the tool's input schema
Usage:
<use_mcp_tool>
<server_name>server name here</server_name>
<tool_name>tool name here</tool_name>
<arguments>
{{
  "param1": "value1"
}}
</arguments>
</use_mcp_tool>

## ask_followup_question
Description: Ask the user a question to gather additional information needed to complete the task. This tool should be used when you encounter ambiguities, need clarification, or require more details to proceed effectively. It allows for interactive problem-solving by enabling direct communication with the user. Use this tool judiciously to maintain a balance between gathering necessary information and avoiding excessive back-and-forth.
Parameters:
- question: (required) The question to ask the user. This should be a clear, specific question that addresses the information you need.
- options: (optional) An array of 2-5 options for the user to choose from. Each option should be a string describing a possible answer.
Usage:
<ask_followup_question>
<question>Your question here</question>
<options>
Array of options here (optional), e.g. ["Option 1", "Option 2", "Option 3"]
</options>
</ask_followup_question>

## attempt_completion
Description: After each tool use, the user will respond with the result of that tool use, i.e. if it succeeded or failed, along with any reasons for failure. Once you've received the results of tool uses and can confirm that the task is complete, use this tool to present the result of your work to the user. The user may respond with feedback if they are not satisfied with the result, which you can use to make improvements and try again.
IMPORTANT NOTE: This tool CANNOT be used until you've confirmed from the user that any previous tool uses were successful. Failure to do so will result in code corruption and system failure.
Parameters:
- result: (required) The result of the task. Formulate this result in a way that is final and does not require further input from the user. Don't end your result with questions or offers for further assistance.
- command: (optional) A CLI command to execute to show a live demo of the result to the user.
Usage:
<attempt_completion>
<result>
Your final result description here
</result>
<command>Command to demonstrate result (optional)</command>
</attempt_completion>

## plan_mode_respond
Description: Respond to the user's inquiry in an effort to plan a solution to the user's task. This tool should be used when you need to provide a response to a question or statement from the user about how you plan to accomplish the task. This tool is only available in PLAN MODE.
Parameters:
- response: (required) The response to provide to the user.
Usage:
<plan_mode_respond>
<response>Your response here</response>
</plan_mode_respond>

# Tool Use Guidelines

1. In <thinking> tags, assess what information you already have and what information you need to proceed with the task.
2. Choose the most appropriate tool based on the task and the tool descriptions provided.
3. If multiple actions are needed, use one tool at a time per message to accomplish the task iteratively, with each tool use being informed by the result of the previous tool use. Do not assume the outcome of any tool use.
4. Formulate your tool use using the XML format specified for each tool.
5. After each tool use, the user will respond with the result of that tool use. This result will provide you with the necessary information to continue your task or make further decisions.
6. ALWAYS wait for user confirmation after each tool use before proceeding. Never assume the success of a tool use without explicit confirmation of the result from the user.

====

EDITING FILES

You have access to two tools for working with files: **write_to_file** and **replace_in_file**. Understanding their roles and selecting the right one for the job will help ensure efficient and accurate modifications.

# Choosing the Appropriate Tool

- **Default to replace_in_file** for most changes. It's the safer, more precise option that minimizes potential issues.
- **Use write_to_file** when creating new files, when the changes are so extensive that replace_in_file would be more complex or error-prone, or when you need to completely reorganize a file.

# Auto-formatting Considerations

- After using either write_to_file or replace_in_file, the user's editor may automatically format the file.
- The tool responses will include the final state of the file after any auto-formatting. Use this final state as your reference point for any subsequent edits.

====

ACT MODE V.S. PLAN MODE

In each user message, the environment_details will specify the current mode. There are two modes:

- ACT MODE: In this mode, you have access to all tools EXCEPT the plan_mode_respond tool. You use tools to accomplish the user's task. Once you've completed the user's task, you use the attempt_completion tool to present the result of the task to the user.
- PLAN MODE: In this special mode, you have access to the plan_mode_respond tool. The goal is to gather information and get context to create a detailed plan for accomplishing the task, which the user will review and approve before they switch you to ACT MODE to implement the solution.

====

CAPABILITIES

- You have access to tools that let you execute CLI commands on the user's computer, list files, view source code definitions, regex search, read and edit files, and ask follow-up questions.
- When the user initially gives you a task, a recursive list of all filepaths in the current working directory ('{CWD}') will be included in environment_details. This provides an overview of the project's file structure.
- You can use search_files to perform regex searches across files in a specified directory, outputting context-rich results that include surrounding lines.
- You can use the execute_command tool to run commands on the user's computer whenever you feel it can help accomplish the user's task.

====

RULES

- Your current working directory is: {CWD}
- You cannot `cd` into a different directory to complete a task. You are stuck operating from '{CWD}', so be sure to pass in the correct 'path' parameter when using tools that require a path.
- Do not use the ~ character or $HOME to refer to the home directory.
- When creating a new project, organize all new files within a dedicated project directory unless the user specifies otherwise.
- When making changes to code, always consider the context in which the code is being used. Ensure that your changes are compatible with the existing codebase and that they follow the project's coding standards and best practices.
- Do not ask for more information than necessary. Use the tools provided to accomplish the user's request efficiently and effectively.
- Your goal is to try to accomplish the user's task, NOT engage in a back and forth conversation.
- NEVER end attempt_completion result with a question or request to engage in further conversation!
- You are STRICTLY FORBIDDEN from starting your messages with "Great", "Certainly", "Okay", "Sure". You should NOT be conversational in your responses, but rather direct and to the point.
- At the end of each user message, you will automatically receive environment_details. This information is not written by the user themselves, but is auto-generated to provide potentially relevant context about the project structure and environment.
- It is critical you wait for the user's response after each tool use, in order to confirm the success of the tool use.

====

SYSTEM INFORMATION

Operating System: Linux 6.8
Default Shell: /bin/bash
Home Directory: /home/user
Current Working Directory: {CWD}

====

OBJECTIVE

You accomplish a given task iteratively, breaking it down into clear steps and working through them methodically.

1. Analyze the user's task and set clear, achievable goals to accomplish it. Prioritize these goals in a logical order.
2. Work through these goals sequentially, utilizing available tools one at a time as necessary.
3. Remember, you have extensive capabilities with access to a wide range of tools that can be used in powerful and clever ways as necessary to accomplish each goal. Before calling a tool, do some analysis within <thinking></thinking> tags.
4. Once you've completed the user's task, you must use the attempt_completion tool to present the result of the task to the user.
5. The user may provide feedback, which you can use to make improvements and try again. But DO NOT continue in pointless back and forth conversations."""

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
            "--- a/src/diff/apply.ts\n+++ b/src/diff/apply.ts\n@@ -41,7 +41,8 @@ export function applyBlock(src: string, b: Block) {\n"
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
            ">       assert msg == \"[SYSTEM] This run is not complete until you call one of these terminal completion tools: submit_and_exit.\"\n"
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
                    [_classic_user([f"[replace_in_file for '{path}'] Result:", SAVED.format(path=path, content=content)],
                                   n)], "replace_in_file", tricky=tricky)

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
