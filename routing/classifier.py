"""The complexity classifier: simple or complex, a score, and the reasons that fired. Pure.

Keywords match as whole words or phrases, case-insensitively: the original tool matched raw
substrings, so "all" fired on "install" and "format" on "information".

    classifier = Classifier(cfg.routing.classifier)     # compiles the keyword patterns once
    result = classifier.classify(features)
    result.label, result.score, result.reasons
"""

from __future__ import annotations

import re
from typing import Iterable

import attrs

from config.schema import ClassifierConfig
from routing.features import Features

SIMPLE, COMPLEX = "simple", "complex"


@attrs.frozen
class Classification:
    label: str  # SIMPLE | COMPLEX
    score: float
    reasons: tuple[str, ...]


def keyword_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """One alternation for all words; phrases match across any run of whitespace."""
    alternatives = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    if not alternatives:
        return None
    body = "|".join(r"\s+".join(re.escape(part) for part in w.split()) for w in alternatives)
    # (?<!\w)/(?!\w) rather than \b, so keywords that start or end in punctuation still work.
    return re.compile(rf"(?<![\w-])(?:{body})(?![\w-])", re.IGNORECASE)


class Classifier:
    def __init__(self, cfg: ClassifierConfig) -> None:
        self.cfg = cfg
        self._complex = keyword_pattern(cfg.complex_keywords)
        self._simple = keyword_pattern(cfg.simple_keywords)

    def classify(self, features: Features) -> Classification:
        cfg = self.cfg
        score = 0.0
        reasons: list[str] = []
        task = features.task_text
        for pattern, weight, kind in ((self._complex, cfg.complex_keyword_weight, "complex"),
                                      (self._simple, -cfg.simple_keyword_weight, "simple")):
            if pattern is None or not task:
                continue
            found = sorted({" ".join(m.lower().split()) for m in pattern.findall(task)})
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
        return Classification(label, score, tuple(reasons))
