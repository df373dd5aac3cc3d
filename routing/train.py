"""Train the task scorer: ``python -m routing.train`` (deterministic for a seed).

Logistic regression on :func:`routing.scorer.features`, fitted by AdaGrad SGD with L2; the
weights of ``--runs`` fits with different shuffles are averaged (one linear model, far steadier
than any single SGD run). What was tuned, and on what:

- the features and ``DEFAULTS`` were chosen by their agreement on the dev split;
- the decision threshold is chosen on out-of-fold predictions over train + dev (``--folds``): the
  best agreement among thresholds that keep complex tasks off the local model (complex→local at
  most ``--max-complex-local``), because a hard task on the small model costs the user far more
  than an easy task on the cloud;
- the shipped model is then fitted on train + dev. The figure printed for dev comes from a
  model fitted on train alone.

The test split is never read here; ``python -m tests.bench.routing_quality`` reports it.

    python -m routing.train                                   # rebuild the bundled model
    python -m routing.train --data mine.jsonl --out mine.json.gz   # your own labelled tasks
    python -m routing.train --add mine.jsonl --out mine.json.gz    # the bundled corpus plus yours

A row of your own file needs ``task`` and ``label``; rows without a ``split`` are split 70/15/15
the same way as the bundled corpus. Point ``routing.classifier.model_file`` at the result.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from typing import Any, Sequence

from routing import corpus
from routing.scorer import BUNDLED, Scorer, features

DEFAULTS = {"epochs": 30, "l2": 3e-3, "rate": 0.1, "seed": 7, "runs": 5, "folds": 5}


def fit(rows: Sequence[dict[str, Any]], *, epochs: int, l2: float, rate: float, seed: int,
        runs: int = 1) -> Scorer:
    """A scorer fitted to ``rows``: the average of ``runs`` fits (threshold 0.5 until tuned)."""
    data = [(features(r["task"]), 1.0 if r["label"] == "complex" else 0.0) for r in rows]
    fits = [_fit(data, epochs=epochs, l2=l2, rate=rate, seed=seed + i) for i in range(runs)]
    weights: dict[str, float] = {}
    for w, _ in fits:
        for f, v in w.items():
            weights[f] = weights.get(f, 0.0) + v / runs
    kept = {f: w for f, w in weights.items() if abs(w) >= 1e-3}  # the rest never sways a verdict
    return Scorer(kept, sum(b for _, b in fits) / runs, 0.5)


def _fit(data: list[tuple[list[str], float]], *, epochs: int, l2: float, rate: float,
         seed: int) -> tuple[dict[str, float], float]:
    weights: dict[str, float] = {}
    squares: dict[str, float] = {}
    bias = bias_sq = 0.0
    order = list(range(len(data)))
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            feats, y = data[i]
            z = bias + sum(weights.get(f, 0.0) for f in feats)
            g = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z)))) - y
            bias_sq += g * g
            bias -= rate * g / math.sqrt(bias_sq + 1e-8)
            for f in feats:
                w = weights.get(f, 0.0)
                step = g + l2 * w
                sq = squares.get(f, 0.0) + step * step
                squares[f] = sq
                weights[f] = w - rate * step / math.sqrt(sq + 1e-8)
    return weights, bias


def confusion(scorer: Scorer, rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, int]:
    out = {"complex_cloud": 0, "complex_local": 0, "simple_local": 0, "simple_cloud": 0}
    for row in rows:
        cloud = scorer.score(row["task"], top=0).probability >= threshold
        out[f"{row['label']}_{'cloud' if cloud else 'local'}"] += 1
    return out


def rates(c: dict[str, int]) -> dict[str, float]:
    """Agreement, and the two errors as shares of their true class (as the README reports them)."""
    total = sum(c.values()) or 1
    complex_n = (c["complex_cloud"] + c["complex_local"]) or 1
    simple_n = (c["simple_local"] + c["simple_cloud"]) or 1
    return {"agreement": (c["complex_cloud"] + c["simple_local"]) / total,
            "complex_local": c["complex_local"] / complex_n, "simple_cloud": c["simple_cloud"] / simple_n}


def out_of_fold(rows: Sequence[dict[str, Any]], folds: int, **params: Any) -> list[tuple[float, str]]:
    """(P(complex), label) for every row, each from a model that did not see it."""
    out = []
    for k in range(folds):
        held = [r for i, r in enumerate(rows) if i % folds == k]
        scorer = fit([r for i, r in enumerate(rows) if i % folds != k], **params)
        out += [(scorer.score(r["task"], top=0).probability, r["label"]) for r in held]
    return out


def tune(scored: Sequence[tuple[float, str]], max_complex_local: float) -> float:
    """The threshold with the best agreement among those within the complex→local bound."""
    complex_n = sum(1 for _, label in scored if label == "complex") or 1
    best: tuple[float, float] | None = None
    for t in sorted({round(p, 4) for p, _ in scored}):
        complex_local = sum(1 for p, label in scored if label == "complex" and p < t) / complex_n
        agree = sum(1 for p, label in scored if (p >= t) == (label == "complex")) / len(scored)
        if complex_local <= max_complex_local and (best is None or agree > best[0]):
            best = (agree, t)
    return best[1] if best else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="*", help="labelled task files (default: the bundled corpus)")
    parser.add_argument("--add", nargs="*", default=[], help="files added to the bundled corpus")
    parser.add_argument("--out", default=BUNDLED, help=f"model file to write (default: {BUNDLED})")
    parser.add_argument("--max-complex-local", type=float, default=0.015,
                        help="largest share of dev complex tasks the threshold may leave on local")
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    args = parser.parse_args(argv)
    rows = [r for path in (args.data or [corpus.CORPUS]) for r in corpus.load(path)]
    rows += [r for path in args.add for r in corpus.load(path)]
    corpus.assign_splits([r for r in rows if r.get("split") not in corpus.SPLITS])
    train, dev = corpus.split(rows, "train"), corpus.split(rows, "dev")
    if not train or not dev:
        print("need rows in both the train and dev splits", file=sys.stderr)
        return 2
    params = {k: getattr(args, k) for k in DEFAULTS if k != "folds"}
    threshold = tune(out_of_fold(train + dev, args.folds, **params), args.max_complex_local)
    dev_rates = rates(confusion(fit(train, **params), dev, threshold))
    scorer = fit(train + dev, **params)
    scorer.threshold = threshold
    scorer.meta = {"params": {**params, "folds": args.folds, "max_complex_local": args.max_complex_local},
                   "tasks": len(train) + len(dev), "dev": {k: round(v, 4) for k, v in dev_rates.items()}}
    tmp = f"{args.out}.tmp"
    with open(tmp, "wb") as fh:  # then renamed: an interrupted run never leaves half a model
        fh.write(scorer.to_bytes())
    os.replace(tmp, args.out)
    print(f"trained on {len(train) + len(dev)} tasks (train + dev), {len(scorer.weights)} weights; threshold "
          f"{threshold:.4f} from {args.folds}-fold predictions. A train-only model on dev: agreement "
          f"{dev_rates['agreement']:.1%}, complex→local {dev_rates['complex_local']:.1%}, simple→cloud "
          f"{dev_rates['simple_cloud']:.1%}. Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
