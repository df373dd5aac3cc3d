"""The learned task scorer, its training and corpus, the classifier on top of it, and the task text it is
given: pure, so no sockets and no sleeps (training runs use a few rows and epochs)."""

from __future__ import annotations

import copy
import gzip
import math
import re
from pathlib import Path

import attrs
import orjson
import pytest

from config.routing import ClassifierConfig
from routing import corpus, train
from routing.classifier import COMPLEX, SIMPLE, Classifier
from routing.features import extract_features
from routing.scorer import MAX_CHARS, Scorer, features
from routing.tokens import TokenCounter

FIXTURES = Path(__file__).parent / "fixtures" / "cline-cli-3.0.65"
ENV = "<environment_details>\n# VSCode Visible Files\nsrc/app.py\n# Current Time\n2026-11-25\n</environment_details>"
REASON = re.compile(r"^.+ ([+-]\d+\.\d\d)$")  # "word \"redesign\" +1.00": a feature, then its signed weight


def structure(text: str) -> set[str]:
    return {f for f in features(text) if f.startswith("s:")}


def fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())["body"]


def feats(body: dict):
    return extract_features(body, TokenCounter())


def task(text: str):
    return feats({"messages": [{"role": "user", "content": text}]})


def weight(reason: str) -> float:
    match = REASON.match(reason)
    assert match, reason
    return float(match.group(1))


# --- features ------------------------------------------------------------------------------------

TRACEBACK = ('Traceback (most recent call last):\n  File "app/main.py", line 3, in <module>\n    run()\n'
             "ValueError: bad value")


@pytest.mark.parametrize("text,feature", [
    ("Fix the typo in src/app.py", "s:files=1"),
    ("Fix the typos in src/app.py and docs/index.md", "s:files=2"),
    ("Rename `fetch` to load", "s:ticks"),
    ('Change the greeting "Hello there" to something shorter', "s:quotes"),
    ("It crashes at line 42, fix it", "s:lineref"),
    (f"This happens on start:\n{TRACEBACK}", "s:trace"),
    ("Make these agree:\n```py\na = 1\n```", "s:fence"),
    ("Why does the build take so long?", "s:question"),
    ("How do I run one test", "s:question"),
    ("Make the API multi-tenant.", "s:unanchored"),
])
def test_structural_features_fire(text, feature):
    assert feature in structure(text)


@pytest.mark.parametrize("text,absent", [
    ("install the package", "s:files=1"),  # words that merely contain an extension or a name
    ("Follow https://example.com/docs/setup to configure it", "s:files=1"),
    ("Add a retry to the HTTP client.", "s:question"),
    ("Add a retry to the HTTP client.", "s:trace"),
    ("Add two retries to the HTTP client.", "s:lineref"),
    ("Make these agree:\n```py\nx = `y`\n```", "s:ticks"),  # backticks inside a fence are the fence's
    ("Fix the typo in src/app.py", "s:unanchored"),
])
def test_structural_features_do_not_fire(text, absent):
    assert absent not in structure(text)


def test_features_are_sorted_unique_and_words_of_an_unanchored_task_are_marked():
    f = features("Make the API multi-tenant. Make it fast.")
    assert f == sorted(set(f))
    assert {"w:make", "w:api", "w:tenant", "u:make", "u:api", "u:tenant", "b:make_the"} <= set(f)
    # A task that names its place gets no u: words: the same verb is small there.
    assert not [x for x in features("Make parse_date() in src/dates.py faster") if x.startswith("u:")]


def test_urls_are_prose_not_words():
    f = set(features("Follow https://example.com/docs/setup to configure it"))
    assert "w:url" in f and "w:example" not in f and "w:docs" not in f


def test_only_the_first_screens_of_a_long_task_count():
    assert "s:files=0" in structure("word " * (MAX_CHARS // 5) + " src/app.py")
    assert "s:files=1" in structure("word " * 10 + " src/app.py")


@pytest.mark.parametrize("url", ["https://docs.python.org/3/library/asyncio.html", "https://pkg.go.dev/net/http"])
def test_a_url_is_not_a_named_file(url):
    s = structure(f"Read {url} and move the whole service to it")
    assert "s:files=0" in s and "s:unanchored" in s


@pytest.mark.parametrize("text", [
    "At some point we should rethink how the whole app stores sessions.",
    "Error handling is inconsistent across the services; make it uniform.",
    "Failing builds should notify the team somehow.",
])
def test_prose_is_not_a_pasted_trace(text):
    s = structure(text)
    assert "s:trace" not in s and "s:unanchored" in s


# --- the scorer ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled() -> Scorer:
    return Scorer.load()


TEXTS = ["Make the API multi-tenant.", "Fix the typo in src/app.py line 3",
         "Why does `make test` hang?", f"Crash:\n{TRACEBACK}\nJust make it not crash."]


@pytest.mark.parametrize("top", [0, 1, 3, 5])
def test_bundled_model_gives_a_probability_and_signed_reasons(bundled, top):
    assert 0 < bundled.threshold < 1 and bundled.weights
    for text in TEXTS:
        result = bundled.score(text, top=top)
        assert 0.0 <= result.probability <= 1.0
        assert len(result.reasons) <= top
        # Reasons weigh toward the verdict: up for a complex one, down for a simple one.
        complex_ = result.probability >= bundled.threshold
        assert all((weight(r) > 0) == complex_ for r in result.reasons), result


def test_reasons_name_the_strongest_features_toward_the_verdict():
    scorer = Scorer({"s:unanchored": 2.0, "w:redesign": 1.0, "w:storage": -0.5, "s:files=1": -3.0}, -1.0, 0.5)
    up = scorer.score("Redesign the storage layer")
    assert up.probability == pytest.approx(1 / (1 + math.exp(-1.5)))
    assert up.reasons == ("names no file, function, string or line +2.00", 'word "redesign" +1.00')
    assert scorer.score("Redesign the storage layer", top=1).reasons == up.reasons[:1]
    down = scorer.score("Redesign the storage layer in src/db.py")
    assert down.probability < 0.5
    assert down.reasons == ("names 1 file(s) -3.00", 'word "storage" -0.50')


def test_model_file_round_trip(bundled, tmp_path):
    path = tmp_path / "model.json.gz"
    path.write_bytes(bundled.to_bytes())
    again = Scorer.load(str(path))
    assert (again.threshold, again.bias, again.meta) == (bundled.threshold, bundled.bias, bundled.meta)
    for text in TEXTS:
        assert again.score(text) == bundled.score(text)
    assert again.to_bytes() == bundled.to_bytes()
    plain = tmp_path / "model.json"  # not gzipped: read as well
    plain.write_bytes(gzip.decompress(bundled.to_bytes()))
    assert Scorer.load(str(plain)).score(TEXTS[0]) == bundled.score(TEXTS[0])


@pytest.mark.parametrize("content", [
    b"not json at all", orjson.dumps([1, 2]), orjson.dumps({"weights": {}, "bias": 0, "threshold": 0.5}),
    gzip.compress(orjson.dumps({"format": 99, "weights": {}, "bias": 0, "threshold": 0.5})),
])
def test_loading_a_non_model_file_is_a_value_error(tmp_path, content):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        Scorer.load(str(path))


@pytest.mark.parametrize("broken", ["truncated", "no_weights"])
def test_a_broken_model_file_is_a_value_error_naming_it(bundled, tmp_path, broken):
    path = tmp_path / "model.json.gz"
    path.write_bytes(bundled.to_bytes()[:1000] if broken == "truncated" else orjson.dumps({"format": 1}))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        Scorer.load(str(path))


# --- training ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return corpus.load()


@pytest.fixture(scope="module")
def small(rows) -> list[dict]:
    picked = corpus.split(rows, "train")[:60]
    assert {r["label"] for r in picked} == {"simple", "complex"}
    return picked


PARAMS = {"epochs": 3, "l2": 3e-3, "rate": 0.1, "runs": 2}


def test_fit_is_deterministic_for_a_seed(small):
    one, two = train.fit(small, seed=7, **PARAMS), train.fit(small, seed=7, **PARAMS)
    assert one.to_bytes() == two.to_bytes()
    assert train.fit(small, seed=8, **PARAMS).to_bytes() != one.to_bytes()
    # And it learned its rows, so the equality above is not that of two empty models.
    c = train.confusion(one, small, 0.5)
    assert train.rates(c)["agreement"] > 0.9


def complex_local(scored, t):
    complex_ = [p for p, label in scored if label == "complex"]
    return sum(1 for p in complex_ if p < t) / len(complex_)


def test_tune_respects_the_complex_to_local_bound():
    # One complex task looks easy (0.05): the most agreement (7/8 at 0.7) leaves it on local.
    scored = [(0.05, "complex"), (0.1, "simple"), (0.2, "simple"), (0.3, "simple"), (0.4, "simple"),
              (0.7, "complex"), (0.8, "complex"), (0.9, "complex")]
    assert train.tune(scored, max_complex_local=0.25) == 0.7
    strict = train.tune(scored, max_complex_local=0.0)
    assert complex_local(scored, strict) == 0.0 and strict == 0.05
    assert complex_local(scored, 0.7) == 0.25


def _tiny_corpus(rows: list[dict], per_label: int) -> list[dict]:
    out = []
    for label in corpus.LABELS:
        picked = [r for r in rows if r["label"] == label and r.get("adversarial") == "none"][:per_label]
        out += [{k: v for k, v in r.items() if k != "split"} for r in picked]  # main splits them itself
    return out


def test_train_main_end_to_end_writes_a_model_scorer_reads(rows, tmp_path, capsys):
    tiny = _tiny_corpus(rows, 20)
    data, out = tmp_path / "tasks.jsonl", tmp_path / "model.json.gz"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in tiny))
    argv = ["--data", str(data), "--out", str(out), "--epochs", "2", "--runs", "1", "--folds", "2"]
    assert train.main(argv) == 0
    model = Scorer.load(str(out))
    expected = corpus.assign_splits(copy.deepcopy(tiny))
    assert model.meta["tasks"] == sum(1 for r in expected if r["split"] in ("train", "dev"))
    assert model.meta["params"]["epochs"] == 2 and model.meta["params"]["folds"] == 2
    assert model.weights and 0.0 <= model.threshold <= 1.0
    assert 0.0 <= model.score("Make the API multi-tenant.").probability <= 1.0
    assert str(out) in capsys.readouterr().out
    first = out.read_bytes()
    assert train.main(argv) == 0 and out.read_bytes() == first  # the same bytes again


def test_train_main_needs_a_dev_split(rows, tmp_path, capsys):
    data = tmp_path / "tasks.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _tiny_corpus(rows, 1)))
    assert train.main(["--data", str(data), "--out", str(tmp_path / "m.gz"), "--epochs", "1", "--runs", "1"]) == 2
    assert "dev" in capsys.readouterr().err and not (tmp_path / "m.gz").exists()


# --- the corpus ----------------------------------------------------------------------------------

def test_bundled_corpus_is_big_balanced_split_and_adversarial(rows):
    assert len(rows) >= 1000
    assert {r["label"] for r in rows} == set(corpus.LABELS)
    assert {r["split"] for r in rows} == set(corpus.SPLITS)
    assert sum(1 for r in rows if r.get("adversarial", "none") != "none") >= 0.3 * len(rows)
    assert len({r.get("stack") for r in rows}) >= 10
    for name in corpus.SPLITS:  # both labels in every split, or its figures mean nothing
        assert {r["label"] for r in corpus.split(rows, name)} == set(corpus.LABELS)


@pytest.mark.parametrize("line,says", [
    (b"{not json", "not JSON"),
    (b'{"task": "", "label": "simple"}', "non-empty string 'task'"),
    (b'["fix it", "simple"]', "non-empty string 'task'"),
    (b'{"task": "fix it", "label": "easy"}', "label must be simple or complex"),
])
def test_a_bad_line_is_an_error_naming_it(tmp_path, line, says):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b'{"task": "fix the typo", "label": "simple"}\n\n' + line + b"\n")
    with pytest.raises(corpus.CorpusError, match=rf"{re.escape(str(path))}:3: .*{re.escape(says)}"):
        corpus.load(str(path))


def test_dedupe_drops_near_duplicates_and_keeps_the_first():
    rows = [{"task": "Add a retry to the HTTP client", "id": 1},
            {"task": "add a retry to the http client!", "id": 2},  # the same words
            {"task": "Add a retry to the HTTP client now", "id": 3},  # 7 of 8 words: near
            {"task": "Add a retry to the gRPC server", "id": 4}]  # 5 of 9: another task
    kept, dropped = corpus.dedupe(rows)
    assert [r["id"] for r in kept] == [1, 4] and dropped == 2


def test_assign_splits_is_deterministic_order_free_and_keeps_existing_splits(rows):
    sample = [{k: v for k, v in r.items() if k != "split"} for r in rows[:200]]
    one = corpus.assign_splits(copy.deepcopy(sample))
    two = corpus.assign_splits(copy.deepcopy(sample[::-1]))
    assert {r["task"]: r["split"] for r in one} == {r["task"]: r["split"] for r in two}
    shares = {name: len(corpus.split(one, name)) / len(one) for name in corpus.SPLITS}
    assert shares["train"] == pytest.approx(0.7, abs=0.05) and shares["test"] == pytest.approx(0.15, abs=0.05)
    fixed = copy.deepcopy(one)
    for r in fixed[:20]:
        r["split"] = "test" if r["split"] != "test" else "dev"
    before = [r["split"] for r in fixed]
    assert [r["split"] for r in corpus.assign_splits(fixed)] == before


# --- the classifier ------------------------------------------------------------------------------

# Hand-set weights: these tests are about the classifier, not the shipped model's opinion.
HAND = Scorer({"s:unanchored": 2.0, "w:redesign": 1.0, "w:storage": -0.5, "s:files=1": -3.0}, -1.0, 0.5)
BIG = "Redesign the storage layer"  # p = 0.82
SMALL = "Fix the typo in src/app.py"  # p = 0.02


def test_learned_method_labels_by_the_models_threshold():
    classifier = Classifier(ClassifierConfig(), scorer=HAND)
    assert classifier.threshold == 0.5
    big, small = classifier.classify(task(BIG)), classifier.classify(task(SMALL))
    assert (big.label, small.label) == (COMPLEX, SIMPLE)
    assert big.score == round(HAND.score(BIG).probability, 4) and big.reasons == HAND.score(BIG).reasons
    assert classifier.classify(task(BIG)) is big  # scored once per task text


def test_config_threshold_overrides_the_models():
    classifier = Classifier(ClassifierConfig(threshold=0.9), scorer=HAND)
    assert classifier.threshold == 0.9
    assert classifier.classify(task(BIG)).label == SIMPLE
    assert Classifier(ClassifierConfig(threshold=0.01), scorer=HAND).classify(task(SMALL)).label == COMPLEX


def test_reasons_agree_with_a_label_set_by_the_config_threshold():
    result = Classifier(ClassifierConfig(threshold=0.9), scorer=HAND).classify(task(BIG))
    assert result.label == SIMPLE
    assert result.reasons and all(weight(r) < 0 for r in result.reasons), result.reasons


def test_phrase_lists_win_over_the_model_as_whole_words():
    cfg = ClassifierConfig(always_cloud=("security", "all"), always_local=("storage layer",))
    classifier = Classifier(cfg, scorer=HAND)
    cloud = classifier.classify(task(SMALL + " for security"))
    assert (cloud.label, cloud.reasons) == (COMPLEX, ("always_cloud: security",))
    local = classifier.classify(task("Redesign the STORAGE\n layer"))
    assert (local.label, local.reasons) == (SIMPLE, ("always_local: storage layer",))
    assert classifier.classify(task("Redesign the storage layer for security")).label == COMPLEX  # cloud first
    # "all" is not in "install", "storage layer" is not in "storage layers".
    assert classifier.classify(task("install the package in src/app.py")).reasons[0].startswith("names 1 file")
    assert classifier.classify(task("Redesign the storage layers")).label == COMPLEX


def test_a_compaction_is_simple_whatever_the_model_says():
    eager = Scorer({}, 10.0, 0.5)  # calls everything complex
    f = feats(fixture("request-3-compaction.json"))
    assert f.compaction
    assert Classifier(ClassifierConfig(), scorer=eager).classify(f).label == SIMPLE
    assert Classifier(ClassifierConfig(), scorer=eager).classify(attrs.evolve(f, compaction=False)).label == COMPLEX


def test_keywords_method_still_works_without_a_model():
    classifier = Classifier(ClassifierConfig(method="keywords"))
    assert classifier.scorer is None
    hard = classifier.classify(task("Find the root cause of this race condition"))
    assert (hard.label, hard.reasons) == (COMPLEX, ("complex keywords: race condition, root cause",))
    assert classifier.classify(task("fix the typo in the readme")).label == SIMPLE


# --- the task text (Cline CLI fixtures and classic Cline) ----------------------------------------

def test_cli_first_turn_task_is_the_plain_task_not_the_system_reminder():
    body = fixture("request-1-first-turn.json")
    assert body["messages"][-1]["content"].startswith("[SYSTEM]")  # the reminder is newest
    f = feats(body)
    assert (f.task_text, f.compaction, f.depth) == ("Add a README.md that says hello", False, 0)


def test_cli_task_survives_a_tool_turn():
    f = feats(fixture("request-2-after-tool-call.json"))
    assert (f.task_text, f.compaction, f.depth, f.has_tools) == ("Add a README.md that says hello", False, 1, True)
    assert f.conversation_key == feats(fixture("request-1-first-turn.json")).conversation_key


def test_cli_compaction_has_no_task():
    f = feats(fixture("request-3-compaction.json"))
    assert (f.task_text, f.task_tokens, f.compaction, f.has_tools) == ("", 0, True, False)


def test_classic_task_comes_from_the_task_tag():
    first = [{"type": "text", "text": "<task>\nRefactor the auth module\n</task>"}, {"type": "text", "text": ENV}]
    body = {"messages": [{"role": "system", "content": "You are Cline."}, {"role": "user", "content": first}]}
    assert feats(body).task_text == "Refactor the auth module"


def test_user_input_tag_is_unwrapped():
    assert task('<user_input mode="act">fix it</user_input>').task_text == "fix it"


def test_cline_error_turns_are_never_the_task():
    error = "[ERROR] You did not use a tool in your previous response! Please retry with a tool use."
    for content in (error, [{"type": "text", "text": error}, {"type": "text", "text": ENV}]):
        body = {"messages": [{"role": "user", "content": "<task>\nAdd a health endpoint\n</task>"},
                             {"role": "assistant", "content": "I would add a route."},
                             {"role": "user", "content": content}]}
        assert feats(body).task_text == "Add a health endpoint"


def test_a_tool_result_for_a_bracketed_path_is_never_the_task():
    result = [{"type": "text", "text": "[read_file for 'app/[slug]/page.tsx'] Result:"},
              {"type": "text", "text": "export default function Page() { return null }"}, {"type": "text", "text": ENV}]
    body = {"messages": [{"role": "user", "content": "<task>\nAdd a 404 for unknown slugs\n</task>"},
                         {"role": "assistant", "content": "<read_file><path>app/[slug]/page.tsx</path></read_file>"},
                         {"role": "user", "content": result}]}
    assert feats(body).task_text == "Add a 404 for unknown slugs"
