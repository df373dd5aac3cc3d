"""The model judge: one short, constrained question to a backend about a task the scorer doubts.

Opt-in (``routing.judge.enabled``). Asked only when the scorer's P(complex) is within ``band`` of
the threshold, on the first turn of a conversation, about the task text alone (never the
system prompt), with JSON output constrained by a schema (``response_format`` json_schema, which
llama-server turns into a grammar and OpenAI-compatible clouds honour), under a hard time
budget. A timeout, an error or an answer that does not parse leaves the scorer's label; the
client never sees the judge. Verdicts are cached per conversation, and every call's tokens are
reported so accounting can price them (a cloud judge's cost counts against savings).

    judge = Judge(backends["local"], cfg.routing.judge, clock)
    verdict = await judge.ask(conversation_key, task_text)
    verdict.label          # "simple" | "complex" | None (fall back to the scorer)
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable

import attrs
import orjson

from backends import Backend, BackendError
from config.routing import JudgeConfig

SCHEMA_NAME = "task_complexity"  # the simulators answer requests for this schema (backends.sim)
SCHEMA = {"type": "object", "properties": {"complex": {"type": "boolean"}}, "required": ["complex"],
          "additionalProperties": False}
INSTRUCTION = (
    "You route coding tasks between a small local model (a 30B coder) and a large cloud model. "
    "A task is complex when the small model would likely fail it or need many more steps: it spans "
    "several components, needs a design or an open investigation, or its size follows from the "
    "feature it asks for. It is simple when it names the exact place and change, or is a "
    "self-contained question. Reply with JSON only: {\"complex\": true} or {\"complex\": false}."
)
CACHE_SIZE = 4096


@attrs.frozen
class JudgeVerdict:
    label: str | None  # None: no usable answer, the scorer's label stands
    backend: str
    seconds: float
    usage: dict[str, Any] | None = None
    error: str | None = None
    cached: bool = False


class Judge:
    def __init__(self, backend: Backend, cfg: JudgeConfig, clock: Callable[[], float]) -> None:
        self.backend = backend
        self.cfg = cfg
        self.clock = clock
        self._cache: collections.OrderedDict[str, JudgeVerdict] = collections.OrderedDict()

    def doubtful(self, probability: float, threshold: float) -> bool:
        return abs(probability - threshold) <= self.cfg.band

    def request(self, task: str) -> dict[str, Any]:
        """The judge's request: the fixed instruction and the task text, nothing else."""
        return {
            "messages": [{"role": "system", "content": INSTRUCTION},
                         {"role": "user", "content": task[:self.cfg.max_task_chars]}],
            "max_tokens": 16, "temperature": 0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": SCHEMA}},
            # No thinking: a verdict, not an essay (GLM on Cerebras; llama.cpp's templates).
            "reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": False},
        }

    async def ask(self, key: str, task: str) -> JudgeVerdict:
        cached = self._cache.get(key) if key else None
        if cached is not None:
            return attrs.evolve(cached, cached=True, usage=None)  # tokens are paid once
        started = self.clock()
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                data = await self.backend.complete(self.request(task))
        except TimeoutError:
            return JudgeVerdict(None, self.backend.name, self.clock() - started, None,
                                f"no answer within {self.cfg.timeout_s:g}s")
        except BackendError as exc:
            return JudgeVerdict(None, self.backend.name, self.clock() - started, None, exc.message)
        verdict = JudgeVerdict(_label(data), self.backend.name, self.clock() - started,
                               data.get("usage") if isinstance(data.get("usage"), dict) else None)
        if verdict.label is None:
            verdict = attrs.evolve(verdict, error="the answer did not parse")
        if key:
            self._cache[key] = verdict
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return verdict


def _label(data: dict[str, Any]) -> str | None:
    try:
        content = data["choices"][0]["message"]["content"]
        answer = orjson.loads(content.strip())
    except (KeyError, IndexError, TypeError, AttributeError, orjson.JSONDecodeError):
        return None
    if isinstance(answer, dict) and isinstance(answer.get("complex"), bool):
        return "complex" if answer["complex"] else "simple"
    return None
