"""The learned task scorer: P(complex) for a task text, and the features that weighed most. Pure.

A logistic regression over the task's words, word pairs, word pieces and a handful of
structural features. Structure carries most of the signal, because what separates an easy task
from a hard one is *scope*, not vocabulary: an easy task names the exact place and change (a
file, a function, a quoted string, a line, a pasted error with its location); a hard one names a
goal whose path is open. So the scorer sees whether the task is anchored (files, identifiers,
quotes, line numbers, traces), how long it is, whether it asks a question, and the words, which
it learns to weigh from the labelled corpus (``routing/data/tasks.jsonl``).

The model file is written by ``python -m routing.train`` (deterministic for a seed) and loaded
once at start-up; nothing here touches the network or a heavy library.

    scorer = Scorer.load()                    # the model shipped in the package
    result = scorer.score("Make the API multi-tenant.")
    result.probability, result.reasons        # 0.93, ('names no file, function or string', ...)
"""

from __future__ import annotations

import gzip
import math
import os
import re
from typing import Any, Iterable

import attrs
import orjson

BUNDLED = os.path.join(os.path.dirname(__file__), "data", "scorer.json.gz")
MAX_CHARS = 4000  # a pasted log or file says no more about scope after its first screens
FORMAT = 1

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_WORD = re.compile(r"[a-z][a-z0-9]*|[0-9]+")
_EXT = ("py|pyi|js|mjs|cjs|ts|tsx|jsx|go|rs|java|kt|kts|cs|rb|erb|php|ex|exs|swift|dart|c|h|cc|cpp|hpp|m|mm|scala|hs"
        "|sql|sh|bash|zsh|ps1|ya?ml|json|toml|ini|cfg|conf|env|md|rst|txt|html?|css|scss|sass|less|vue|svelte|tf|"
        "tfvars|gradle|xml|lock|proto|graphql|csv|ipynb|dockerfile|mk|makefile|jsonc|j2|tpl|plist|csproj|sln")
_FILE = re.compile(rf"(?<![\w@])(?:[\w.-]+/)*[\w.-]*\.(?:{_EXT})\b|\b(?:Dockerfile|Makefile|Gemfile|Rakefile|"
                   r"Procfile|Jenkinsfile|Cargo\.toml|go\.mod|readme|changelog|license|gitignore)\b", re.I)
_TICK = re.compile(r"`[^`\n]{1,80}`")
_IDENT = re.compile(r"\b[a-z]+_[a-z0-9_]+\b|\b[a-z]+[A-Z][A-Za-z0-9]*\b|\b\w+\(\)|\b[A-Z]\w*\.\w+\b"
                    r"|\b[A-Z][a-z]+[A-Z]\w*\b|\b__\w+__\b"
                    r"|\b[A-Z]\w+ (?:class|struct|enum|interface|component|module|trait|protocol|model|type)\b")
_QUOTE = re.compile(r"\"[^\"\n]{2,120}\"|'[^'\n]{2,120}'|“[^”\n]{2,120}”")
_LINEREF = re.compile(r"\bline\s+\d+|\bL\d+\b|:\d+(?::\d+)?\b|\blines\s+\d+", re.I)
# Case-sensitive and anchored on each line: "At some point", "Error handling" or "Failing builds"
# opening a sentence are prose, not a pasted trace.
_TRACE = re.compile(r"^\s*(?:Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|at [\w.$<>/]+\s*\(|panic:"
                    r"|error(?:\[E\d+\])?:|[\w.]*(?:Error|Exception)(?::|\s*$)|FAIL\b|fatal:|warning:|E {2,}|\^+\s*$)",
                    re.M)
_QUESTION = re.compile(r"^\s*(?:what|why|how|when|where|which|who|whats|what's|is|are|can|could|does|do|did|should"
                       r"|would|explain|describe|tell me)\b", re.I)
_URL = re.compile(r"https?://\S+")


class ModelFileError(ValueError):
    """The scorer's model file is missing, truncated or not a model (a start-up error)."""


@attrs.frozen
class Score:
    probability: float  # P(complex)
    reasons: tuple[str, ...]  # the features that weighed most toward the verdict, strongest first


def _bucket(n: int, edges: Iterable[int]) -> str:
    last = 0
    for edge in edges:
        if n < edge:
            return f"{last}-{edge - 1}"
        last = edge
    return f"{last}+"


def features(text: str) -> list[str]:
    """The task's features, each once: ``w:`` words, ``b:`` word pairs, ``s:`` structure, and ``u:``
    words of a task that names nothing (no file, identifier, string, line or trace)."""
    text = text[:MAX_CHARS]
    fences = len(_FENCE.findall(text))
    prose = _URL.sub(" url ", _FENCE.sub(" ", text))
    files = len(set(_FILE.findall(_URL.sub(" ", text))))  # a link names no file of this repo
    ticks = len(_TICK.findall(prose))
    idents = len(set(_IDENT.findall(prose)))
    quotes = len(_QUOTE.findall(prose))
    linerefs = len(_LINEREF.findall(text))
    traces = len(_TRACE.findall(text))
    words = _WORD.findall(prose.lower())
    out = {f"w:{w}" for w in words}
    # Word pieces (character 4-grams) were tried and left out: they cost 2 points of agreement on
    # the dev split, letting the model match surface forms instead of scope.
    out.update(f"b:{a}_{b}" for a, b in zip(words, words[1:], strict=False))
    anchors = files + ticks + idents + quotes + linerefs
    out.update((
        f"s:files={min(files, 3)}",
        f"s:idents={min(idents, 3)}",
        f"s:words={_bucket(len(words), (5, 10, 20, 40, 80, 160))}",
        f"s:anchors={min(anchors, 4)}",
    ))
    flags = {"ticks": ticks, "quotes": quotes, "lineref": linerefs, "trace": traces, "fence": fences,
             "question": bool(_QUESTION.match(prose)) or prose.rstrip().endswith("?")}
    out.update(f"s:{name}" for name, on in flags.items() if on)
    if not anchors and not traces and not fences:
        # Scope times vocabulary, which a linear model cannot form by itself: "refactor" in a
        # task that names its place is small; with nothing named, the same word is a project.
        out.add("s:unanchored")
        out.update(f"u:{w}" for w in words)
    return sorted(out)


_NAMES = {
    "s:unanchored": "names no file, function, string or line",
    "s:trace": "pasted error or trace", "s:fence": "pasted code block", "s:question": "a question",
    "s:ticks": "names code in backticks", "s:quotes": "quotes a string", "s:lineref": "names a line",
}


def describe(feature: str) -> str:
    """A feature as a person reads it, for logs and /stats."""
    kind, _, value = feature.partition(":")
    if feature in _NAMES:
        return _NAMES[feature]
    if kind == "w":
        return f'word "{value}"'
    if kind == "u":
        return f'word "{value}" with nothing named'
    if kind == "b":
        return f'"{value.replace("_", " ")}"'
    name, _, n = value.partition("=")
    return {"files": f"names {n} file(s)", "idents": f"names {n} identifier(s)", "words": f"{n} words",
            "anchors": f"{n} anchor(s)"}.get(name, feature)


class Scorer:
    """A loaded model: weights per feature and a bias; ``threshold`` was tuned on the dev split."""

    def __init__(self, weights: dict[str, float], bias: float, threshold: float,
                 meta: dict[str, Any] | None = None) -> None:
        self.weights = weights
        self.bias = bias
        self.threshold = threshold
        self.meta = meta or {}

    @classmethod
    def load(cls, path: str | None = None) -> Scorer:
        """The model at ``path`` (default: the bundled one); :class:`ModelFileError` names a bad file."""
        path = path or BUNDLED
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
            data = orjson.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a scorer model file (format {FORMAT})")
            return cls(dict(data["weights"]), float(data["bias"]), float(data["threshold"]), data.get("meta"))
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise ModelFileError(f"cannot load the scorer model {path}: {exc}") from None

    def to_bytes(self) -> bytes:
        """The model file: sorted, rounded, gzip with no timestamp, so a seed gives the same bytes."""
        body = {"format": FORMAT, "bias": round(self.bias, 6), "threshold": round(self.threshold, 6),
                "meta": self.meta, "weights": {k: round(v, 5) for k, v in sorted(self.weights.items())}}
        return gzip.compress(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), compresslevel=9, mtime=0)

    def logit(self, feats: Iterable[str]) -> float:
        weights = self.weights
        return self.bias + sum(weights.get(f, 0.0) for f in feats)

    def score(self, text: str, top: int = 3, threshold: float | None = None) -> Score:
        """P(complex) and the ``top`` features that pulled toward the verdict at ``threshold``
        (default: the model's own; the config may set another)."""
        feats = features(text)
        z = self.logit(feats)
        p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        toward = 1.0 if p >= (self.threshold if threshold is None else threshold) else -1.0
        pulls = sorted(((self.weights.get(f, 0.0) * toward, f) for f in feats), reverse=True)
        reasons = tuple(f"{describe(f)} {pull * toward:+.2f}" for pull, f in pulls[:top] if pull > 0)
        return Score(p, reasons)
