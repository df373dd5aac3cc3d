"""The ``routing:`` section: strategy, the task scorer, the judge, escalation and the runaway guard."""

from __future__ import annotations

import re

import attrs

from config.fields import at_most, field, fraction, non_empty, non_negative, one_of, positive

STRATEGIES = ("complexity", "local_first", "cloud_first", "local_only", "cloud_only")
METHODS = ("learned", "keywords")

# The keyword method's defaults (the classifier before the learned scorer; kept for configs
# that tuned these lists, which the loader migrates to ``method: keywords``).
COMPLEX_KEYWORDS = (
    "refactor", "architecture", "architect", "design", "redesign", "debug", "root cause",
    "race condition", "deadlock", "concurrency", "thread safety", "memory leak", "optimize",
    "optimise", "performance", "security", "vulnerability", "migrate", "migration",
    "implement", "algorithm", "distributed", "scalability", "across the codebase",
    "end-to-end", "rewrite", "from scratch", "investigate", "why does", "trade-off", "tradeoffs",
)
SIMPLE_KEYWORDS = (
    "typo", "rename", "format", "reformat", "comment", "docstring", "lint", "import",
    "print", "log message", "readme", "changelog", "bump", "version", "whitespace",
    "indentation", "hello", "what is", "list files", "explain this line",
)
KEYWORD_FIELDS = (
    "complex_keywords", "simple_keywords", "complex_keyword_weight", "simple_keyword_weight",
    "long_task_tokens", "long_task_weight", "code_blocks", "code_blocks_weight",
    "large_conversation_tokens", "large_conversation_weight", "complex_threshold",
)

# Cline's own automated texts, matched at the START of what the agent wrote back after an
# assistant turn (a user turn, or the body after a "[tool for 'x'] Result:" header, or a tool
# message), never inside file contents or command output. Classic extension and Cline CLI/SDK.
CLINE_PATTERNS = {
    "search_mismatch": r"(?:The tool execution failed with the following error:\s*<error>\s*)?The SEARCH block:",
    "tool_failed": r"The tool execution failed with the following error",
    "no_tool_used": r"\[ERROR\] You did not use a tool in your previous response"
                    r"|\[ERROR\] Your previous response was truncated"
                    r"|\[SYSTEM\] This run is not complete until you call"
                    r"|Your previous turn ended with a plain-text response",
    "missing_parameter": r"Missing value for required parameter|Missing required parameter"
                         r"|One or more tool calls were invalid or missing required parameters",
    "repeated_call": r"Tool \[[\w.-]+\] has been called \d+ times consecutively with identical arguments",
    "too_many_mistakes": r"You seem to be having trouble proceeding",
    "completion_rejected": r"The user has provided feedback on the results",
    # Claude Code (through the Anthropic front, which wraps a tool_result with is_error in
    # <tool_use_error>, as Claude Code wraps its own): a failed tool call. A command's non-zero
    # exit ("Exit code 1") is ordinary work, as with Cline's run_commands: tests fail.
    "tool_error": r"<tool_use_error>(?!\s*Exit code \d)",
}
# Cline CLI/SDK tools whose {"success": false} means the model got an edit or a read wrong (a
# bad path, a range, a stale search text). run_commands failing is ordinary work: tests fail.
FAILING_TOOLS = ("editor", "read_files", "replace_in_file", "write_to_file", "read_file")


def regex_map(value: dict) -> str | None:
    for name, pattern in value.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
            return f"signal name {name!r} must be lower_snake_case (it becomes a metric label)"
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"{name}: not a regular expression ({exc})"
    return None


@attrs.frozen
class ClassifierConfig:
    """Decides simple or complex for a new task; ``learned`` uses the scorer shipped in the package."""

    method: str = field("learned", "learned (the scorer model) or keywords (the keyword lists below).",
                        one_of(*METHODS))
    model_file: str = field("", "Scorer model file (python -m routing.train writes one); empty = the bundled one.")
    threshold: float = field(0.0, "P(complex) at or above which a task is complex; 0 = the model's own "
                             "(tuned on its dev split).", fraction)
    always_cloud: tuple = field((), "Phrases (whole words) that make a task complex, whatever the model says.")
    always_local: tuple = field((), "Phrases that make a task simple, whatever the model says (always_cloud wins).")
    complex_keywords: tuple = field(COMPLEX_KEYWORDS, "keywords method: words/phrases that mark a hard task.")
    simple_keywords: tuple = field(SIMPLE_KEYWORDS, "keywords method: words/phrases that mark an easy task.")
    complex_keyword_weight: float = field(2.0, "keywords method: score per distinct complex keyword.",
                                          non_negative)
    simple_keyword_weight: float = field(1.0, "keywords method: score removed per distinct simple keyword.",
                                         non_negative)
    long_task_tokens: int = field(400, "keywords method: a task this long (tokens) counts as complex evidence.",
                                  positive)
    long_task_weight: float = field(2.0, "keywords method: score added for a long task.", non_negative)
    code_blocks: int = field(2, "keywords method: this many fenced code blocks count as complex evidence.",
                             positive)
    code_blocks_weight: float = field(1.0, "keywords method: score added for many code blocks.", non_negative)
    large_conversation_tokens: int = field(32000, "keywords method: a conversation this large counts as complex.",
                                           positive)
    large_conversation_weight: float = field(1.0, "keywords method: score added for a large conversation.",
                                             non_negative)
    complex_threshold: float = field(2.0, "keywords method: score at or above which a task is complex.")


@attrs.frozen
class JudgeConfig:
    """Opt-in: ask a model one short question about a task the scorer is unsure of."""

    enabled: bool = field(False, "Ask a backend to judge tasks whose P(complex) is within `band` of the threshold.")
    backend: str = field("local", "Which backend judges (local is free).", non_empty)
    band: float = field(0.15, "Half-width of the doubtful band around the threshold.", fraction)
    timeout_s: float = field(1.5, "Hard time budget for the judge's answer; past it the scorer's label stands.",
                             at_most(30.0))
    max_task_chars: int = field(2000, "Characters of the task text the judge sees (never the system prompt).",
                                positive)


@attrs.frozen
class EscalationConfig:
    """Move a local conversation to the cloud when its recent turns show local failing."""

    enabled: bool = field(True, "Escalate conversations whose recent turns show the local model failing.")
    window: int = field(4, "Recent agent-feedback turns looked at.", positive)
    signals: int = field(2, "Turns with a failure signal among them that escalate.", positive)
    alarms: tuple = field(("too_many_mistakes",), "Signals that escalate on their own.")
    patterns: dict = field(CLINE_PATTERNS, "Signal name -> regex matched at the start of the agent's own "
                           "feedback text (Cline's by default).", regex_map)
    failing_tools: tuple = field(FAILING_TOOLS, "Tools whose {\"success\": false} result is a failure signal.")


@attrs.frozen
class GuardConfig:
    """Stop serving a conversation that loops, so an agent cannot burn the cloud budget."""

    enabled: bool = field(True, "Stop conversations that keep failing after escalation, or loop.")
    signals_after_escalation: int = field(6, "Failure signals after escalation that stop the conversation.",
                                          positive)
    repeats: int = field(8, "Identical consecutive turns (same call, same result) that stop it.", positive)
    pause_s: float = field(600.0, "How long a stopped conversation is refused.", positive)


@attrs.frozen
class RoutingConfig:
    strategy: str = field("complexity", "complexity, local_first, cloud_first, local_only or cloud_only.",
                          one_of(*STRATEGIES))
    classifier: ClassifierConfig = field(ClassifierConfig(), "How a new task is judged simple or complex.")
    judge: JudgeConfig = field(JudgeConfig(), "A model judge for doubtful tasks (opt-in).")
    escalation: EscalationConfig = field(EscalationConfig(), "Escalation on evidence of local failing.")
    guard: GuardConfig = field(GuardConfig(), "The runaway guard.")
    max_conversation_usd: float = field(0.0, "Cloud spend cap per conversation; 0 = off.", non_negative)
    sticky: bool = field(True, "Keep a conversation on the backend that served its last turn (warm KV cache).")
    sticky_ttl_s: float = field(3600.0, "Forget a conversation's backend after this long idle.", positive)
    output_reserve_tokens: int = field(4096, "Tokens kept free for the answer when checking context fit.",
                                       non_negative)
    max_attempts: int = field(3, "Upstream attempts per request before the first byte (all backends).",
                              positive)
    max_total_s: float = field(30.0, "Time budget for those attempts, backoff included.", positive)
    backoff_base_s: float = field(0.25, "First retry backoff; doubles per retry, with full jitter.", positive)
    backoff_max_s: float = field(4.0, "Longest single backoff.", positive)
    breaker_failures: int = field(
        3, "Failures among a backend's last 20 outcomes (and at least half of them) that open its circuit.",
        positive)
    breaker_open_s: float = field(10.0, "Time an open circuit waits before a half-open trial (<= 30).",
                                  at_most(30.0))
    cooldown_s: float = field(10.0, "Cooldown after a 429 that names no reset time.", positive)
    ratelimit_reserve: float = field(0.02, "Fraction of each cloud rate-limit window kept in reserve.",
                                     fraction)
    hedge_after_s: float = field(0.0, "Start the cloud in parallel if local has sent no delta by then; 0 = off.",
                                 non_negative)
    max_local_ttft_s: float = field(30.0, "A prompt whose predicted time to first token on a backend (from its "
                                    "measured prefill speed) is past this goes elsewhere (slow_local); 0 = off.",
                                    non_negative)
    prefill_margin_s: float = field(0.0, "Also switch a prefill whose progress ETA exceeds the other backend's "
                                    "measured TTFT by this much; 0 = off (only first_token_timeout_s counts).",
                                    non_negative)
    continue_prompt: str = field(
        "Continue exactly where you stopped. Output only the continuation, without repeating anything "
        "you already wrote.",
        "User message that asks a fallback without prefill support to continue a partial answer.", non_empty)
