"""Escalation signals, the runaway guard and the router's use of them: pure, so no sockets and no sleeps (the
backends are scripted fakes and the clock is injected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

from backends import Capabilities, Chunk
from config.routing import EscalationConfig, GuardConfig, RoutingConfig
from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT, ClassifierConfig
from routing import Router, TokenCounter
from routing.conversations import Conversations
from routing.errors import ConversationStopped
from routing.escalation import Detector, turn_fingerprint

FIXTURES = Path(__file__).parent / "fixtures" / "cline-cli-3.0.65"
DETECTOR = Detector(EscalationConfig())
NONE: frozenset[str] = frozenset()


def env(clock: int = 0) -> str:
    return f"<environment_details>\n# VSCode Visible Files\nsrc/app.py\n# Current Time\n{clock}\n</environment_details>"


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())["body"]


# --- classic Cline: tool results and notices are user turns ----------------------------------------

def classic(task: str, *turns: dict) -> list[dict]:
    first = {"role": "user", "content": [text(f"<task>\n{task}\n</task>"), text(env())]}
    return [{"role": "system", "content": "You are Cline, a highly skilled software engineer."}, first, *turns]


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def header(tool: str, target: str | None) -> str:
    return f"[{tool}] Result:" if target is None else f"[{tool} for '{target}'] Result:"


def result_parts(tool: str, body: str, target: str | None = "src/app.py", clock: int = 0) -> dict:
    """Cline's usual shape: the header, the body and environment_details as separate text parts."""
    return {"role": "user", "content": [text(header(tool, target)), text(body), text(env(clock))]}


def result_string(tool: str, body: str, target: str | None = "src/app.py") -> dict:
    return {"role": "user", "content": f"{header(tool, target)}\n{body}"}


def notice(body: str, clock: int = 0) -> dict:
    """A user turn Cline wrote itself (no tool header)."""
    return {"role": "user", "content": [text(body), text(env(clock))]}


SEARCH_MISMATCH = ("The tool execution failed with the following error:\n<error>\nThe SEARCH block:\n"
                   "    return a + b\n...does not match anything in the file.\n\nThis is likely because the "
                   "SEARCH block content doesn't match exactly with what's in the file.\n</error>")
TOOL_FAILED = ("The tool execution failed with the following error:\n<error>\nError writing file: EACCES: "
               "permission denied\n</error>")
NO_TOOL = "[ERROR] You did not use a tool in your previous response! Please retry with a tool use."
MISSING = "Missing value for required parameter 'path'. Please retry with complete response."
MISTAKES = ("You seem to be having trouble proceeding. The user has provided the following feedback to help "
            "guide you:\n<feedback>\nlook at the other module\n</feedback>")
REJECTED = ("The user has provided feedback on the results. Consider their input to continue the task, and then "
            "attempt completion again.\n<feedback>\nthe tests still fail\n</feedback>")

# signal -> (the tool whose result carries it, or None for a notice turn; the text)
SIGNALS = {
    "search_mismatch": ("replace_in_file", SEARCH_MISMATCH),
    "tool_failed": ("write_to_file", TOOL_FAILED),
    "no_tool_used": (None, NO_TOOL),
    "missing_parameter": ("read_file", MISSING),
    "repeated_call": ("read_file", "Tool [read_file] has been called 3 times consecutively with identical "
                                   "arguments. Try a different approach."),
    "too_many_mistakes": (None, MISTAKES),
    "completion_rejected": ("attempt_completion", REJECTED),
}


def test_every_default_signal_is_covered():
    # tool_error is Claude Code's, in its own shape: tests/test_anthropic_routing.py.
    assert set(SIGNALS) | {"tool_error"} == set(EscalationConfig().patterns)


def one_by_one(detector: Detector, lead: str) -> list[str]:
    """What the detector's patterns say tried one at a time, in its order."""
    return next(([name] for name, pattern in detector.patterns if pattern.match(lead)), [])


@pytest.mark.parametrize("patterns", [None, {"quoted": r"(['\"]).*?\1 failed", "failed": r"Failed"}],
                         ids=["defaults", "with a backreference"])
def test_the_patterns_tried_at_once_pick_what_trying_each_in_turn_picks(patterns):
    cfg = EscalationConfig() if patterns is None else EscalationConfig(patterns=patterns)
    detector = Detector(cfg)
    assert (detector._any is None) == (patterns is not None)  # groups of their own: tried in turn
    leads = [body for _, body in SIGNALS.values()] + [
        "<tool_use_error>File not found</tool_use_error>", "<tool_use_error>Exit code 1\nFAIL", "  \n" + NO_TOOL,
        "The tool execution failed with the following error:\n<error>\nThe SEARCH block:", "'x' failed", "Failed",
        "\"y' failed", "all good", "", "The SEARCH block", "[ERROR] Your previous response was truncated"]
    found = [detector._match(lead) for lead in leads]
    assert found == [one_by_one(detector, lead) for lead in leads]
    assert sum(map(bool, found)) >= (len(SIGNALS) + 2 if patterns is None else 2)


@pytest.mark.parametrize("shape", ["parts", "string"])
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_each_default_signal_at_the_start_of_a_feedback_turn(signal, shape):
    tool, body = SIGNALS[signal]
    if tool is None:
        feedback = notice(body) if shape == "parts" else {"role": "user", "content": f"{body}\n\n{env()}"}
    else:
        target = None if tool == "attempt_completion" else "src/app.py"
        feedback = (result_parts if shape == "parts" else result_string)(tool, body, target)
    messages = classic("Fix the typo in src/app.py", assistant("<write_to_file>...</write_to_file>"), feedback)
    assert DETECTOR.recent_turns(messages, 4) == [frozenset({signal})]


def test_a_failure_for_a_bracketed_path_in_one_string_is_a_signal():
    messages = classic("Add a 404 page", assistant("<replace_in_file>...</replace_in_file>"),
                       result_string("replace_in_file", TOOL_FAILED, "app/[slug]/page.tsx"))
    assert DETECTOR.recent_turns(messages, 4) == [frozenset({"tool_failed"})]


def test_a_failure_for_a_bracketed_path_in_parts_is_a_signal():
    messages = classic("Add a 404 page", assistant("<replace_in_file>...</replace_in_file>"),
                       result_parts("replace_in_file", TOOL_FAILED, "app/[slug]/page.tsx"))
    assert DETECTOR.recent_turns(messages, 4) == [frozenset({"tool_failed"})]


# --- Cline CLI: role "tool" JSON results and [SYSTEM] reminders -----------------------------------

REMINDER = {"role": "user", "content": fixture("request-1-first-turn.json")["messages"][-1]["content"]}


def cli(*turns: dict) -> list[dict]:
    """The CLI's first turn as captured (system, task, reminder), then ``turns``."""
    return [*fixture("request-1-first-turn.json")["messages"], *turns]


def call(tool: str, call_id: str = "call_1", args: str = "{}") -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": tool, "arguments": args}}]}


def tool_result(call_id: str, success: bool, result: str = "", error: str = "") -> dict:
    payload: dict[str, Any] = {"query": "q", "result": result, "success": success}
    if error:
        payload["error"] = error
    return {"role": "tool", "tool_call_id": call_id, "content": orjson.dumps(payload).decode()}


@pytest.mark.parametrize("tool,signals", [
    ("editor", {"tool_failed"}), ("read_files", {"tool_failed"}),
    ("run_commands", set()),  # a command that exits non-zero is normal work: tests fail
])
def test_cli_failed_tool_result(tool, signals):
    messages = cli(call(tool), tool_result("call_1", False, error="Error: no such file or range"))
    assert DETECTOR.recent_turns(messages, 4) == [frozenset(signals)]
    ok = cli(call(tool), tool_result("call_1", True, result="done"))
    assert DETECTOR.recent_turns(ok, 4) == [NONE]


def test_cli_failure_is_attributed_to_its_own_call():
    two = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "run_commands", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "editor", "arguments": "{}"}}]}
    assert DETECTOR.recent_turns(cli(two, tool_result("a", False, error="exit 1"), tool_result("b", True)), 4) == [NONE]
    assert DETECTOR.recent_turns(cli(two, tool_result("a", True), tool_result("b", False, error="no match")), 4) == [
        frozenset({"tool_failed"})]


def test_cli_text_only_answer_then_reminder_is_no_tool_used_but_the_first_reminder_is_not():
    assert DETECTOR.recent_turns(cli(), 4) == []  # the first-turn reminder follows the task, no assistant
    assert DETECTOR.recent_turns(fixture("request-2-after-tool-call.json")["messages"], 4) == [NONE]
    messages = cli(assistant("I have added the README."), REMINDER)
    assert DETECTOR.recent_turns(messages, 4) == [frozenset({"no_tool_used"})]


# --- negatives: Cline's texts inside files, command output and the user's words -------------------

FILE_WITH_NOTICES = ("# Troubleshooting the agent\n\nWhen the model answers in prose, Cline replies:\n\n"
                     f"    {NO_TOOL}\n\nand when an edit misses:\n\n    {SEARCH_MISMATCH}\n\n"
                     f"and later: {MISTAKES}\n")
COMMAND_OUTPUT = ("Command executed.\nOutput:\n============ test session starts ============\n"
                  f"tests/test_cline.py F\n  AssertionError: expected {SEARCH_MISMATCH!r}\n"
                  "The SEARCH block:\n  old\n...does not match anything in the file.\n1 failed\n")


@pytest.mark.parametrize("feedback", [
    result_parts("read_file", FILE_WITH_NOTICES, "docs/troubleshooting.md"),
    result_string("read_file", FILE_WITH_NOTICES, "docs/troubleshooting.md"),
    result_parts("execute_command", COMMAND_OUTPUT, "pytest"),
    result_string("execute_command", COMMAND_OUTPUT, "pytest"),
    # The user's own words, after a question: tagged, so never the start of an agent text.
    result_parts("ask_followup_question", f"<answer>\n{TOOL_FAILED}\nwhat does this mean?\n</answer>", None),
    notice(f"<user_message>\n{NO_TOOL}\nwhy does it keep saying this?\n</user_message>"),
    {"role": "user", "content": f"Please find out why the log says: {NO_TOOL}"},
], ids=["file-parts", "file-string", "command-parts", "command-string", "answer", "user-message", "plain-user"])
def test_cline_texts_inside_contents_are_not_signals(feedback):
    messages = classic("Fix the typo in src/app.py", assistant("<read_file>...</read_file>"), feedback)
    assert DETECTOR.recent_turns(messages, 4) == [NONE]


def test_cline_texts_in_the_task_are_not_signals():
    task = f"Cline keeps printing this, make it stop:\n{TOOL_FAILED}\n{NO_TOOL}"
    messages = classic(task, assistant("<read_file>...</read_file>"), result_parts("read_file", "x = 1"))
    assert DETECTOR.recent_turns(messages, 4) == [NONE]
    cli_task = {"role": "user", "content": f'<user_input mode="act">{NO_TOOL} -- why?</user_input>'}
    messages = [{"role": "system", "content": "You are Cline."}, cli_task, REMINDER, assistant("Looking."), cli_task]
    assert DETECTOR.recent_turns(messages, 4) == [NONE]


def test_cli_tool_output_that_starts_with_a_cline_text_is_not_a_signal():
    for tool in ("read_files", "run_commands"):
        messages = cli(call(tool), tool_result("call_1", True, result=f"{NO_TOOL}\n{TOOL_FAILED}"))
        assert DETECTOR.recent_turns(messages, 4) == [NONE]


# --- escalates() and recent_turns() ---------------------------------------------------------------

F, N, A = frozenset({"tool_failed"}), NONE, frozenset({"too_many_mistakes"})


@pytest.mark.parametrize("turns,escalates", [
    ([F, N, N, F], True),  # 2 signal turns among the last 4
    ([N, F, F], True),
    ([F, N, N, N], False),  # one isolated signal, then healthy turns
    ([F], False),
    ([N, N, N, A], True),  # an alarm alone
    ([A], True),
    ([F, F, N, N, N, N], False),  # older than the window
    ([A, N, N, N, N], False),
    ([], False),
])
def test_escalates(turns, escalates):
    assert DETECTOR.escalates(turns) is escalates


def test_recent_turns_are_oldest_first_and_at_most_n():
    bodies = [TOOL_FAILED, "x = 1", SEARCH_MISMATCH, "y = 2", MISSING, "z = 3"]
    turns = [t for i, b in enumerate(bodies) for t in (assistant(f"<read_file>{i}</read_file>"),
                                                        result_parts("read_file", b, clock=i))]
    messages = classic("Fix it", *turns)
    expected = [frozenset({"tool_failed"}), N, frozenset({"search_mismatch"}), N, frozenset({"missing_parameter"}), N]
    assert DETECTOR.recent_turns(messages, 10) == expected
    assert DETECTOR.recent_turns(messages, 3) == expected[-3:]
    assert DETECTOR.escalates(DETECTOR.recent_turns(messages, 4)) is True  # search_mismatch + missing_parameter
    # An assistant message with nothing after it yet ends no turn.
    assert DETECTOR.recent_turns([*messages, assistant("thinking")], 3) == expected[-3:]


# --- turn_fingerprint -----------------------------------------------------------------------------

def test_fingerprint_is_the_newest_turn():
    read = assistant("<read_file><path>src/app.py</path></read_file>")
    one = classic("Fix it", read, result_parts("read_file", "x = 1", clock=1))
    later = classic("Fix it", assistant("<list_files>.</list_files>"), result_parts("list_files", "src/"),
                    read, result_parts("read_file", "x = 1", clock=2))
    # Same call, same result: equal, though the clock in environment_details and the history differ.
    assert turn_fingerprint(one) == turn_fingerprint(later)
    assert turn_fingerprint(one) != turn_fingerprint(classic("Fix it", read, result_parts("read_file", "x = 2")))
    other_call = assistant("<read_file><path>src/b.py</path></read_file>")
    assert turn_fingerprint(one) != turn_fingerprint(classic("Fix it", other_call, result_parts("read_file", "x = 1")))
    assert turn_fingerprint(cli()) is None  # no assistant turn yet


def test_cli_fingerprint_sees_the_tool_call_and_the_result():
    base = turn_fingerprint(cli(call("editor", args='{"path":"a"}'), tool_result("call_1", False, error="e")))
    assert base == turn_fingerprint(cli(call("editor", args='{"path":"a"}'), tool_result("call_1", False, error="e")))
    assert base != turn_fingerprint(cli(call("editor", args='{"path":"b"}'), tool_result("call_1", False, error="e")))
    assert base != turn_fingerprint(cli(call("editor", args='{"path":"a"}'), tool_result("call_1", True)))


# --- Conversations: sticky escalation and the runaway guard ---------------------------------------

CFG = RoutingConfig()
TTL = 3600.0


def conversations(**cfg: Any) -> Conversations:
    return Conversations(attrs.evolve(CFG, **cfg), ttl_s=TTL)


def test_escalation_happens_once_and_sticks():
    c = conversations()
    first = c.observe("k", 1, F, 1, False, now=0)
    assert (first.escalated, first.escalated_now, first.stopped) == (False, False, None)
    crossing = c.observe("k", 2, F, 2, True, now=1)
    assert (crossing.escalated, crossing.escalated_now, crossing.signals) == (True, True, F)
    for depth in range(3, 6):
        later = c.observe("k", depth, N, 10 + depth, depth == 3, now=depth)
        assert (later.escalated, later.escalated_now) == (True, False)
    assert c.escalated("k", now=5) and not c.escalated("other", now=5)


def test_a_repeated_depth_counts_nothing_twice():
    c = conversations()
    c.observe("k", 1, N, 1, False, now=0)
    assert not c.observe("k", 1, F, 1, True, now=1).escalated  # a retry of depth 1: not a new turn
    assert c.observe("k", 2, F, 2, True, now=2).escalated_now
    assert not c.observe("k", 2, F, 2, True, now=3).escalated_now
    for n in range(20):  # the same failing turn retried: neither a signal after escalation nor a repeat
        assert c.observe("k", 3, F, 3, True, now=4 + n).stopped is None


def test_a_pinned_conversation_never_escalates():
    c = conversations()
    for depth in range(1, 30):
        v = c.observe("k", depth, A, depth, True, now=depth, may_escalate=False)
        assert not v.escalated and not v.escalated_now
    assert not c.escalated("k", now=30)


def test_failing_after_escalation_stops_for_pause_s_then_serves_again():
    c = conversations()
    assert c.observe("k", 1, F, 1, True, now=0).escalated
    after = CFG.guard.signals_after_escalation
    assert after == 6
    for n in range(1, after):
        assert c.observe("k", 1 + n, F, 1 + n, True, now=n).stopped is None
    stop = c.observe("k", 1 + after, F, 1 + after, True, now=100).stopped
    assert stop is not None
    assert (stop.reason, stop.setting, stop.until) == (
        "failing_after_escalation", "routing.guard.signals_after_escalation", 100 + CFG.guard.pause_s)
    assert c.observe("k", 2 + after, N, 99, True, now=stop.until - 1).stopped == stop  # still paused
    resumed = c.observe("k", 3 + after, N, 100, True, now=stop.until)
    assert resumed.stopped is None and resumed.escalated  # served again, still on the cloud


def test_healthy_turns_after_escalation_do_not_count_toward_the_guard():
    c = conversations()
    c.observe("k", 1, F, 1, True, now=0)
    for depth in range(2, 60):
        signals = F if depth % 10 == 0 else N  # a failure now and then: 5 in all, under 6
        assert c.observe("k", depth, signals, depth, True, now=depth).stopped is None


def test_repeating_the_same_turn_stops_at_guard_repeats():
    c = conversations(guard=GuardConfig(repeats=5))
    for depth in range(1, 5):  # 4 identical turns in a row: not yet
        assert c.observe("k", depth, N, 42, False, now=depth).stopped is None
    stop = c.observe("k", 5, N, 42, False, now=5).stopped
    assert stop is not None and (stop.reason, stop.setting, stop.until) == ("repeating", "routing.guard.repeats",
                                                                            5 + CFG.guard.pause_s)
    assert c.observe("k", 6, N, 43, False, now=stop.until).stopped is None  # the pause is over
    # A different turn in between resets the run.
    c = conversations(guard=GuardConfig(repeats=3))
    for depth, fp in enumerate([7, 7, 8, 7, 7, 8, 7, 7], 1):
        assert c.observe("k", depth, N, fp, False, now=depth).stopped is None


def test_default_repeats_is_eight_identical_turns():
    c = conversations()
    assert [c.observe("k", d, N, 42, False, now=d).stopped is None for d in range(1, 9)] == [True] * 7 + [False]


def test_conversation_budget_stops():
    c = conversations(max_conversation_usd=1.0)
    c.observe("k", 1, N, 1, False, now=0)
    c.spent("k", 0.6, now=1)
    assert c.observe("k", 2, N, 2, False, now=2).stopped is None
    c.spent("k", 0.4, now=3)
    stop = c.observe("k", 3, N, 3, False, now=4).stopped
    assert stop is not None and (stop.reason, stop.setting, stop.until) == (
        "conversation_budget", "routing.max_conversation_usd", 4 + CFG.guard.pause_s)
    assert conversations().observe("k", 1, N, 1, False, now=0).stopped is None  # 0 = no cap


def test_a_healthy_long_conversation_is_never_stopped_or_escalated():
    c = conversations()
    for depth in range(1, 201):
        v = c.observe("k", depth, N, depth, False, now=depth * 5.0)
        assert (v.escalated, v.stopped) == (False, None)


def test_entries_expire_after_ttl():
    c = conversations()
    c.observe("k", 1, F, 1, True, now=0)
    assert c.escalated("k", now=TTL)
    assert not c.escalated("k", now=TTL + 1)
    fresh = c.observe("k", 2, N, 2, False, now=TTL + 1)  # forgotten: a new conversation state
    assert not fresh.escalated


# --- the router, with scripted backends and a fake clock ------------------------------------------

DONE = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"total_tokens": 1}}


class ScriptedBackend:
    """The Backend interface the router uses (as in tests/test_router_unit.py); every call answers."""

    def __init__(self, name: str, cfg: Any) -> None:
        self.name, self.cfg = name, cfg
        self.tier, self.caps = cfg.tier, Capabilities.of(cfg)
        self.rate_limits: dict = {}
        self.calls = 0

    async def stream(self, body: Any):
        self.calls += 1
        yield Chunk({"choices": [{"index": 0, "delta": {"content": self.name}}]})
        yield Chunk(DONE)


@attrs.define
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        raise AssertionError(f"no test here sleeps ({seconds}s)")


def make_router(**cfg: Any) -> tuple[Router, FakeClock]:
    clock = FakeClock()
    backends = {"local": ScriptedBackend("local", LOCAL_DEFAULT), "cloud": ScriptedBackend("cloud", CLOUD_DEFAULT)}
    cfg.setdefault("classifier", ClassifierConfig(method="keywords"))
    return Router(backends, RoutingConfig(**cfg), TokenCounter(), clock=clock, sleep=clock.sleep), clock


async def turn(router: Router, clock: FakeClock, messages: list[dict], strategy: str = "complexity"):
    """One request of the conversation, served to the end (so stickiness is recorded)."""
    clock.now += 1
    body = {"model": "glm-4.7", "messages": messages}
    route = router.route(body, strategy)
    _, outcome = await router.complete(route, body)
    return Turn(route, outcome)


@attrs.frozen
class Turn:
    """A route and what happened to it, read as one."""

    route: Any
    outcome: Any

    def __getattr__(self, name: str) -> Any:
        # backend and reason are what happened; the rest (escalated_by, features, ...) was decided.
        return getattr(self.outcome if name in ("backend", "reason") else self.route, name)


def failing_classic() -> list[list[dict]]:
    """The messages of each request: a failure, a healthy read, a failure (crossing 2 of 4), then healthy."""
    steps = [("replace_in_file", SEARCH_MISMATCH), ("read_file", "x = 1\n"), ("replace_in_file", TOOL_FAILED),
             ("read_file", "x = 2\n"), ("read_file", "x = 3\n")]
    messages = classic("Fix the typo in src/app.py")
    out = []
    for i, (tool, body) in enumerate(steps):
        messages = [*messages, assistant(f"<{tool}><path>src/app.py</path>{i}</{tool}>"),
                    result_parts(tool, body, clock=i)]
        out.append(messages)
    return out


async def test_router_escalates_a_failing_classic_conversation_at_the_crossing_turn():
    router, clock = make_router()
    requests = failing_classic()
    routes = [await turn(router, clock, m) for m in requests[:2]]
    assert [(r.backend, r.reason, r.escalated_by) for r in routes] == [("local", "simple", None),
                                                                       ("local", "sticky", None)]
    crossing = await turn(router, clock, requests[2])
    assert (crossing.backend, crossing.reason, crossing.escalated_by) == ("cloud", "escalated", "tool_failed")
    retry = router.route({"messages": requests[2]}, "complexity")  # a client retry of the same turn
    assert (retry.reason, retry.escalated_by) == ("escalated", None)
    for messages in requests[3:]:
        later = await turn(router, clock, messages)
        assert (later.backend, later.reason, later.escalated_by) == ("cloud", "escalated", None)


async def test_a_pinned_strategy_never_escalates():
    router, clock = make_router()
    for messages in failing_classic():
        route = await turn(router, clock, messages, "local_only")
        assert (route.backend, route.reason, route.escalated_by) == ("local", "pinned", None)
    key = route.features.conversation_key
    assert not router.conversations.escalated(key, clock.now)


def text_only_loop(n: int) -> list[list[dict]]:
    """The Cline CLI answering in prose ``n`` times, each answer followed by the [SYSTEM] reminder."""
    messages = cli()
    out = []
    for i in range(n):
        messages = [*messages, assistant(f"I think the README is fine now (attempt {i})."), REMINDER]
        out.append(messages)
    return out


async def test_router_escalates_a_cli_text_only_loop_then_the_guard_stops_it():
    router, clock = make_router()
    requests = text_only_loop(20)
    first = await turn(router, clock, requests[0])
    assert (first.backend, first.escalated_by) == ("local", None)
    crossing = await turn(router, clock, requests[1])
    assert (crossing.backend, crossing.reason, crossing.escalated_by) == ("cloud", "escalated", "no_tool_used")
    after = router.cfg.guard.signals_after_escalation
    for messages in requests[2:1 + after]:  # the next after - 1 failing turns are still served
        assert (await turn(router, clock, messages)).reason == "escalated"
    clock.now += 1
    with pytest.raises(ConversationStopped) as info:
        router.route({"messages": requests[1 + after]}, "complexity")
    stop = info.value
    assert (stop.reason, stop.setting) == ("failing_after_escalation", "routing.guard.signals_after_escalation")
    assert stop.retry_after == router.cfg.guard.pause_s > 0
    clock.now += 100  # the client retries: still refused, for less time
    with pytest.raises(ConversationStopped) as info:
        router.route({"messages": requests[1 + after]}, "complexity")
    assert info.value.retry_after == router.cfg.guard.pause_s - 100


async def test_a_compaction_touches_neither_escalation_nor_stickiness():
    router, clock = make_router()
    requests = text_only_loop(20)
    await turn(router, clock, requests[0])
    escalated = await turn(router, clock, requests[1])
    key = escalated.features.conversation_key
    assert router.states.sticky.get(key, clock.now) == "cloud"
    # The CLI summarises the session in the middle of the conversation, served by local.
    compaction = await turn(router, clock, fixture("request-3-compaction.json")["messages"])
    assert (compaction.backend, compaction.reason, compaction.escalated_by) == ("local", "simple", None)
    assert compaction.classification.reasons == ("a compaction (summarising) request",)
    assert router.conversations.escalated(key, clock.now)
    assert router.states.sticky.get(key, clock.now) == "cloud"
    # The guard's count was not moved by it either: the stop still comes 6 signal turns after escalating.
    after = router.cfg.guard.signals_after_escalation
    for messages in requests[2:1 + after]:
        assert (await turn(router, clock, messages)).reason == "escalated"
    with pytest.raises(ConversationStopped):
        router.route({"messages": requests[1 + after]}, "complexity")
