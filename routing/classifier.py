"""Simple or complex for a new task, with the reasons that decided it. Pure.

Two methods (``routing.classifier.method``):

- ``learned`` (the default): :class:`routing.scorer.Scorer`, the model shipped in the package (or
  ``model_file``), gives P(complex); at or above the threshold the task is complex;
- ``keywords``: the keyword lists and size thresholds of the first versions, kept for configs
  that tuned them.

Either way the phrase lists ``always_cloud`` and ``always_local`` win first. Keywords and
phrases match as whole words or phrases, case-insensitively (the original tool matched raw
substrings, so "all" fired on "install" and "format" on "information").

    classifier = Classifier(cfg.routing.classifier)     # loads the model once
    result = classifier.classify(features)
    result.label, result.score, result.reasons          # score: P(complex), or the keyword score
"""

from __future__ import annotations

import collections
import re
from typing import Iterable

import attrs

from config.routing import ClassifierConfig
from routing.features import Features
from routing.scorer import Scorer

SIMPLE, COMPLEX = "simple", "complex"
CACHE_SIZE = 4096  # task texts; a conversation's task is the same on every turn


@attrs.frozen
class Classification:
    label: str  # SIMPLE | COMPLEX
    score: float
    reasons: tuple[str, ...]
    source: str = ""  # "model" (the learned scorer), "judge", "rule" (always_*), "keywords", "compaction"


def keyword_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """One alternation for all words; phrases match across any run of whitespace."""
    alternatives = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    if not alternatives:
        return None
    body = "|".join(r"\s+".join(re.escape(part) for part in w.split()) for w in alternatives)
    # (?<!\w)/(?!\w) rather than \b, so keywords that start or end in punctuation still work.
    return re.compile(rf"(?<![\w-])(?:{body})(?![\w-])", re.IGNORECASE)


def _found(pattern: re.Pattern[str] | None, text: str) -> list[str]:
    if pattern is None or not text:
        return []
    return sorted({" ".join(m.lower().split()) for m in pattern.findall(text)})


class Classifier:
    def __init__(self, cfg: ClassifierConfig, scorer: Scorer | None = None) -> None:
        self.cfg = cfg
        self._always_cloud = keyword_pattern(cfg.always_cloud)
        self._always_local = keyword_pattern(cfg.always_local)
        self._complex = keyword_pattern(cfg.complex_keywords)
        self._simple = keyword_pattern(cfg.simple_keywords)
        self.scorer: Scorer | None = None
        self.threshold = cfg.complex_threshold
        if cfg.method == "learned":
            self.scorer = scorer or Scorer.load(cfg.model_file or None)
            self.threshold = cfg.threshold or self.scorer.threshold
        # Cline resends the conversation every turn with the same task: score it once.
        self._cache: collections.OrderedDict[tuple[str, int], Classification] = collections.OrderedDict()

    def classify(self, features: Features) -> Classification:
        if features.compaction:
            return Classification(SIMPLE, 0.0, ("a compaction (summarising) request",), "compaction")
        text = features.task_text
        for pattern, label in ((self._always_cloud, COMPLEX), (self._always_local, SIMPLE)):
            found = _found(pattern, text)
            if found:
                which = "always_cloud" if label == COMPLEX else "always_local"
                return Classification(label, 1.0 if label == COMPLEX else 0.0, (f"{which}: {', '.join(found)}",),
                                      "rule")
        if self.scorer is None:
            return self._keywords(features)
        key = (text, features.task_tokens)
        cached = self._cache.get(key)
        if cached is None:
            score = self.scorer.score(text, threshold=self.threshold)
            label = COMPLEX if score.probability >= self.threshold else SIMPLE
            cached = self._cache[key] = Classification(label, round(score.probability, 4), score.reasons, "model")
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return cached

    def _keywords(self, features: Features) -> Classification:
        cfg = self.cfg
        score = 0.0
        reasons: list[str] = []
        for pattern, weight, kind in ((self._complex, cfg.complex_keyword_weight, "complex"),
                                      (self._simple, -cfg.simple_keyword_weight, "simple")):
            found = _found(pattern, features.task_text)
            if found:
                score += weight * len(found)
                reasons.append(f"{kind} keywords: {', '.join(found)}")
        if features.task_tokens >= cfg.long_task_tokens:
            score += cfg.long_task_weight
            reasons.append(f"long task ({features.task_tokens} tokens)")
        if features.code_blocks >= cfg.code_blocks:
            score += cfg.code_blocks_weight
            reasons.append(f"{features.code_blocks} code blocks")
        if features.prompt_tokens >= cfg.large_conversation_tokens:
            score += cfg.large_conversation_weight
            reasons.append(f"large conversation ({features.prompt_tokens} tokens)")
        label = COMPLEX if score >= cfg.complex_threshold else SIMPLE
        return Classification(label, score, tuple(reasons), "keywords")
