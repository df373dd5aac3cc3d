"""The labelled task corpus (``routing/data/tasks.jsonl``): loading, checking, and the fixed split.

One JSON object per line: ``task``, ``label`` (simple | complex), ``why``, ``split`` (train | dev |
test) and descriptive tags (``stack``, ``kind``, ``style``, ``adversarial``). The label rule is
in the README ("Routing: the label rule"). The split is stored in the file, assigned once by
:func:`assign_splits`, so it never moves when the corpus grows: the test split is never used
for tuning, and its figures are the ones reported.

    python -m routing.corpus build routing/data/parts/*.jsonl   # dedupe, split, write tasks.jsonl
    python -m routing.corpus stats                               # counts per label, split and tag
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import sys
from typing import Any, Iterable

import orjson

CORPUS = os.path.join(os.path.dirname(__file__), "data", "tasks.jsonl")
LABELS = ("simple", "complex")
SPLITS = ("train", "dev", "test")
TAGS = ("stack", "kind", "style", "adversarial")
SHARES = (0.7, 0.15, 0.15)  # train, dev, test
NEAR_DUPLICATE = 0.8  # Jaccard similarity of word sets above which two tasks count as one


class CorpusError(Exception):
    pass


def load(path: str = CORPUS) -> list[dict[str, Any]]:
    """Every row of a corpus file, checked: a bad line is an error naming the line."""
    rows = []
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{n}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("task"), str) or not row["task"].strip():
                raise CorpusError(f"{path}:{n}: needs a non-empty string 'task'")
            if row.get("label") not in LABELS:
                raise CorpusError(f"{path}:{n}: label must be simple or complex (got {row.get('label')!r})")
            rows.append(row)
    return rows


def split(rows: Iterable[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("split") == name]


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def dedupe(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Drop exact and near duplicates (keeping the first), so no task sits in two splits."""
    kept: list[dict[str, Any]] = []
    seen: list[frozenset[str]] = []
    by_word: dict[str, list[int]] = collections.defaultdict(list)
    dropped = 0
    for row in rows:
        words = _words(row["task"])
        candidates = {i for w in words for i in by_word.get(w, ())}
        if any(len(words & seen[i]) / max(1, len(words | seen[i])) >= NEAR_DUPLICATE for i in candidates):
            dropped += 1
            continue
        for w in words:
            by_word[w].append(len(seen))
        seen.append(words)
        kept.append(row)
    return kept, dropped


def assign_splits(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stratified by label and adversarial shape, ordered by a hash of the text: deterministic,
    and independent of the order the rows were written in. Rows that have a split keep it."""
    strata: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        if row.get("split") not in SPLITS:
            strata[(row["label"], row.get("adversarial", "none"))].append(row)
    for members in strata.values():
        members.sort(key=lambda r: hashlib.blake2b(r["task"].encode(), digest_size=8).digest())
        cut_train = round(len(members) * SHARES[0])
        cut_dev = cut_train + round(len(members) * SHARES[1])
        for i, row in enumerate(members):
            row["split"] = "train" if i < cut_train else "dev" if i < cut_dev else "test"
    return rows


def write(rows: list[dict[str, Any]], path: str = CORPUS) -> None:
    keys = ("task", "label", "why", "split", *TAGS)
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps({k: row[k] for k in keys if k in row}) + b"\n")


def stats(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out = {"label": collections.Counter(r["label"] for r in rows),
           "split": collections.Counter(f"{r.get('split')}/{r['label']}" for r in rows)}
    for tag in TAGS:
        out[tag] = collections.Counter(str(r.get(tag)) for r in rows)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        existing = load() if os.path.exists(CORPUS) else []
        rows = existing + [r for path in argv[1:] for r in load(path)]
        rows, dropped = dedupe(rows)
        write(assign_splits(rows))
        print(f"{CORPUS}: {len(rows)} tasks ({dropped} near-duplicates dropped)")
        return 0
    if argv[:1] == ["stats"]:
        for name, counts in stats(load()).items():
            print(f"{name}: {counts}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
