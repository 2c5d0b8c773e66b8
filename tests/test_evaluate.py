"""racq eval on a tiny random model with tiny adapters: the four result files, every score per row,
the generation cache (a re-run generates nothing; a new stage generates only itself), the statistics
against known answers, the paper table, and the hand-labelled calibration set.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_evaluate.py -q
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from racq.scoring.calibration import calibration_agreement, load_calibration
from racq.data import Passage
from racq.eval.report import PAPER_ROUGE_L, paper_table
from racq.eval.significance import bootstrap_ci, paired_test
from racq.scoring.agreement import agreement
from racq.eval.run import EvalConfig, EvalError, evaluate, pick_examples
from racq.scoring.faithfulness import FaithfulnessConfig, Scorer
from racq.generate import StageModel
from racq.scoring.metrics import METRICS
from racq.retrieval import Index

# The metric's kappa against the 150 hand labels, measured with the default Scorer when the set was
# made: 0.507 (accuracy 0.853, no false alarms, 15 of 37 unfaithful items caught; data/calibration/
# README.md). The floor leaves room for changes to the scorer but fails if its flag drifts towards chance.
KAPPA_FLOOR = 0.3


@pytest.fixture
def adapters(tmp_path, tiny_adapters):
    root = tmp_path / "adapters"
    shutil.copytree(tiny_adapters, root)
    return root


@pytest.fixture(scope="module")
def examples():
    return pick_examples(["paqa", "cambignq"], "test", 2)


@pytest.fixture(scope="module")
def lexical():
    return Scorer(FaithfulnessConfig(use_semantic=False))


def _cfg(tmp_path, tiny_lm, adapters, **kw) -> EvalConfig:
    base = dict(stages=["base", "sft"], limit=2, run="t", results_dir=str(tmp_path / "results"),
                cache_dir=str(tmp_path / "cache"), base_model=str(tiny_lm), adapters_dir=str(adapters),
                max_new_tokens=6, n_boot=200, calibration=False)
    return EvalConfig(**{**base, **kw})


class Spy:
    """Counts StageModel.load and the stages of every StageModel.generate call."""

    def __init__(self, monkeypatch):
        self.loads, self.calls = 0, []
        real_load, real_generate = StageModel.load.__func__, StageModel.generate

        def load(cls, *a, **kw):
            self.loads += 1
            return real_load(cls, *a, **kw)

        def generate(sm, prompts, stages, gen=None, **kw):
            self.calls.append(list(stages))
            return real_generate(sm, prompts, stages, gen, **kw)

        monkeypatch.setattr(StageModel, "load", classmethod(load))
        monkeypatch.setattr(StageModel, "generate", generate)


# ---------------------------------------------------------------- statistics, known answers
def test_bootstrap_ci_known_answers():
    const = bootstrap_ci([0.25] * 30)
    assert const == {"mean": 0.25, "ci_low": 0.25, "ci_high": 0.25, "n": 30}
    half = bootstrap_ci([0, 1] * 50, n_boot=4000)
    # a proportion of 0.5 over 100 examples: standard error 0.05, so the 95% CI is about 0.5 +- 0.098
    assert half["mean"] == 0.5 and half["ci_low"] == pytest.approx(0.402, abs=0.02)
    assert half["ci_high"] == pytest.approx(0.598, abs=0.02)
    assert bootstrap_ci([1.0, None, 0.0])["n"] == 2
    assert bootstrap_ci([None])["mean"] is None
    assert bootstrap_ci([0, 1, 1], seed=3) == bootstrap_ci([0, 1, 1], seed=3)


def test_paired_test_known_answers():
    same = paired_test([0.1, 0.5, 0.9], [0.1, 0.5, 0.9])
    assert same["diff"] == 0 and same["p_bootstrap"] == 1.0 and same["p_sign"] == 1.0 and same["ties"] == 3
    better = paired_test([1.0] * 10, [0.0] * 10, n_boot=999)
    assert better["diff"] == 1.0 and better["wins"] == 10 and better["losses"] == 0
    assert better["p_bootstrap"] == pytest.approx(2 / 1000)
    assert better["p_sign"] == pytest.approx(2 / 1024)  # exact two-sided binomial, 10 of 10
    mixed = paired_test([1] * 8 + [0] * 2, [0] * 8 + [1] * 2)
    assert mixed["wins"] == 8 and mixed["losses"] == 2 and mixed["p_sign"] == pytest.approx(0.109375)
    assert mixed["diff"] == pytest.approx(0.6) and mixed["ci_low"] <= 0.6 <= mixed["ci_high"]
    assert paired_test([None, 1.0], [0.0, 0.0])["n"] == 1
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 2.0])


def test_agreement_known_answer():
    # 2x2 table tp=4 tn=4 fp=1 fn=1: po = 0.8, pe = 0.5, kappa = 0.6
    labels = [1] * 5 + [0] * 5
    flags = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    a = agreement(labels, flags)
    assert (a["tp"], a["tn"], a["fp"], a["fn"]) == (4, 4, 1, 1)
    assert a["accuracy"] == 0.8 and a["kappa"] == pytest.approx(0.6) and a["precision"] == 0.8


def test_paper_table_lists_paper_numbers_and_ours():
    table = paper_table({"paqa": {"gold": {}, "sft": {"rougeL": {"mean": 0.2}}, "aligned": {"rougeL": {"mean": 0.25}}}})
    assert "| PaQa | 46.83 | 20.00 | 25.00 |" in table
    assert "| CAmbigNQ | 36.66 | not run | not run |" in table
    assert all(str(v) in table for v in PAPER_ROUGE_L.values()) and "ours: gold" not in table


# ---------------------------------------------------------------- the run
def test_eval_command_writes_four_files_with_every_score(tmp_path, tiny_lm, adapters):
    from racq.cli import app

    res = CliRunner().invoke(app, [
        "eval", "--stages", "base,uncond,sft", "--limit", "2", "--run", "cli", "--base-model", str(tiny_lm),
        "--adapters-dir", str(adapters), "--set", f"results_dir={tmp_path / 'results'}",
        "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "max_new_tokens=6", "--set", "n_boot=200"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "results" / "cli"
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "per_example.jsonl", "plots.png", "report.md"]
    assert (folder / "plots.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["examples"] == {"paqa": 2, "cambignq": 2}
    assert metrics["generation"]["generated"] == 12 and metrics["generation"]["generate_calls"] == 2  # 12 / 8
    rows = [json.loads(line) for line in (folder / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 4  # gold + 3 stages per example
    for r in rows:
        assert {"query", "passage_ids", "gold", "prediction", "scores", "options", "stage"} <= set(r)
        assert len(r["passage_ids"]) == 3
        s = r["scores"]
        for m in ("option_support", "hallucinated", "grounded", "repeats_option", "has_options",
                  "novel_content", "parent_precision", "parent_recall", "parent_f1", "is_question"):
            assert isinstance(s[m], (int, float)) and not math.isnan(s[m]), (m, r)
        assert s["grounded"] == int(s["has_options"] and not s["hallucinated"])
        for m in METRICS:
            assert (s[m] is None) == (r["stage"] == "gold"), (m, r["stage"])
        assert not any(k.startswith("nli") for k in s)  # no NLI model: no made-up NLI number
    assert {r["prompt"] for r in rows if r["stage"] == "uncond"} == {"query-only"}
    assert {r["prompt"] for r in rows if r["stage"] == "sft"} == {"passages"}
    report = (folder / "report.md").read_text()
    assert "NLI: skipped: no NLI model configured." in report
    assert "## Our ROUGE-L next to the RAC paper" in report and "| PaQa | 46.83 |" in report
    assert "### Faithfulness to the passages" in report and "### Paired tests against `sft`" in report
    assert re.search(r"\| all \| \d+ \| [0-9.]+ \| -?[0-9.]+ \|", report)  # calibration accuracy and kappa
    assert metrics["calibration"]["n"] >= 60 and metrics["nli"] == "skipped: no NLI model configured"
    assert set(metrics["paired_tests"]["paqa"]) == {"gold", "base", "uncond"}


def test_rerun_generates_nothing_and_a_new_stage_only_itself(tmp_path, tiny_lm, adapters, examples, lexical,
                                                             monkeypatch):
    cfg = _cfg(tmp_path, tiny_lm, adapters)
    first = evaluate(cfg, examples=examples, scorer=lexical)
    assert first["generation"]["generated"] == 4 * 2 and first["generation"]["cached"] == 0
    rows1 = (tmp_path / "results" / "t" / "per_example.jsonl").read_text()

    spy = Spy(monkeypatch)
    again = evaluate(cfg, examples=examples, scorer=lexical)
    assert spy.loads == 0 and spy.calls == []  # no model loaded, no generate call
    assert again["generation"] == {"cached": 8, "generated": 0, "generate_calls": 0, "seconds": 0.0}
    assert again["scoring"]["computed"] == 0
    assert (tmp_path / "results" / "t" / "per_example.jsonl").read_text() == rows1

    more = evaluate(_cfg(tmp_path, tiny_lm, adapters, stages=["base", "sft", "aligned"]), examples=examples,
                    scorer=lexical)
    assert spy.loads == 1 and [s for c in spy.calls for s in c] == ["aligned"] * 4
    assert more["generation"]["generated"] == 4 and more["generation"]["cached"] == 8


def test_retrained_adapter_is_generated_again(tmp_path, tiny_lm, adapters, examples, lexical, monkeypatch):
    from racq.tiny import make_random_adapter

    cfg = _cfg(tmp_path, tiny_lm, adapters)
    evaluate(cfg, examples=examples, scorer=lexical)
    shutil.rmtree(adapters / "sft")
    make_random_adapter(tiny_lm, adapters / "sft", seed=42)
    spy = Spy(monkeypatch)
    out = evaluate(cfg, examples=examples, scorer=lexical)
    assert [s for c in spy.calls for s in c] == ["sft"] * 4 and out["generation"]["cached"] == 4


def test_unknown_stage_is_a_clear_error_and_writes_nothing(tmp_path, tiny_lm, adapters, examples, lexical):
    cfg = _cfg(tmp_path, tiny_lm, adapters, stages=["base", "aligned-r7"])
    with pytest.raises(EvalError, match="aligned-r7.*no adapter"):
        evaluate(cfg, examples=examples, scorer=lexical)
    assert not (tmp_path / "results").exists()


from racq.tiny import BagOfWords  # noqa: E402  (toy embedder shared with the benches)


def test_retrieved_mode_scores_against_the_index_passages(tmp_path, tiny_lm, adapters, examples, lexical):
    corpus = [p for e in examples for p in e.passages[:2]] + [Passage("Rivers", "The Nile flows north.")]
    index = Index.build(corpus, BagOfWords(), log=lambda m: None)
    cfg = _cfg(tmp_path, tiny_lm, adapters, passages="retrieved", stages=["sft"])
    evaluate(cfg, examples=examples, scorer=lexical, index=index)
    rows = [json.loads(x) for x in (tmp_path / "results" / "t" / "per_example.jsonl").read_text().splitlines()]
    in_index = {p.pid for p in corpus}
    assert rows and all(len(r["passage_ids"]) == 3 and set(r["passage_ids"]) <= in_index for r in rows)


def test_usefulness_columns_evidence_modes_and_the_guard(tmp_path, tiny_lm, adapters, examples, lexical,
                                                          monkeypatch):
    """Usefulness per row (stages and gold), the evidence ceiling on gold rows only, the report's
    section; the mmr evidence and the decoding guard are new prompts/decodings (generated again)."""
    first = evaluate(_cfg(tmp_path, tiny_lm, adapters), examples=examples, scorer=lexical)
    rows = [json.loads(x) for x in (tmp_path / "results" / "t" / "per_example.jsonl").read_text().splitlines()]
    for r in rows:
        s = r["scores"]
        assert s["covers_any"] in (0, 1) and 0 <= s["coverage"] <= 1 and s["distinct_options"] in (0, 1)
        assert s["useful_grounded"] == int(s["grounded"] and s["distinct_options"] and s["covers_any"])
        gold = r["stage"] == "gold"
        for m in ("evidence_2plus", "evidence_share", "grounded_prompt"):
            assert (s.get(m) is not None) == gold, (m, r["stage"])
    assert {"useful_grounded", "covers_any", "evidence_2plus"} <= set(first["metrics"])
    report = (tmp_path / "results" / "t" / "report.md").read_text()
    assert "### Usefulness: the query's human interpretations" in report and "useful & grounded ↑" in report
    assert first["usefulness_calibration"]["n"] >= 100

    spy = Spy(monkeypatch)
    guarded = evaluate(_cfg(tmp_path, tiny_lm, adapters, no_repeat_ngram_size=4), examples=examples, scorer=lexical)
    assert guarded["generation"]["generated"] == 8 and spy.loads == 1  # a new decoding: not the cached one
    mmr = evaluate(_cfg(tmp_path, tiny_lm, adapters, evidence="mmr", run="m"), examples=examples, scorer=lexical)
    assert mmr["generation"]["generated"] == 8
    rows = [json.loads(x) for x in (tmp_path / "results" / "m" / "per_example.jsonl").read_text().splitlines()]
    own = {p.pid for e in examples for p in e.passages}
    assert all(r["passage_ids"] and not set(r["passage_ids"]) <= own for r in rows)  # scored on what it showed


# ---------------------------------------------------------------- calibration against hand labels
def test_calibration_set_is_real_labelled_and_the_metric_agrees_above_the_floor():
    items = load_calibration()
    assert len(items) >= 60
    labels = {it["label"] for it in items}
    assert labels == {"faithful", "unfaithful"}
    assert all(it["reason"].strip() and it["passage_objs"] and it["question"].strip() for it in items)
    assert {"gold", "base"} <= {it["source"] for it in items}
    cal = calibration_agreement(Scorer())
    assert cal["n"] == len(items) and cal["faithful"] + cal["unfaithful"] == len(items)
    assert 0 <= cal["accuracy"] <= 1 and cal["kappa"] > KAPPA_FLOOR, cal


def test_the_app_engines_ask_what_the_reference_asks(tmp_path, tiny_lm, adapters, examples, lexical):
    """`racq eval --set engine=joint|merged`: own cache keys, and the same questions as the PEFT path."""
    stages = ["base", "sft", "aligned"]
    rows = {}
    for engine in ("peft", "joint", "merged"):
        out = evaluate(_cfg(tmp_path, tiny_lm, adapters, stages=stages, engine=engine, run=engine),
                       examples=examples, scorer=lexical)
        assert out["generation"]["generated"] == 4 * 3, engine  # nothing shared with another engine's cache
        per = (tmp_path / "results" / engine / "per_example.jsonl").read_text().splitlines()
        rows[engine] = sorted((r["topic_id"], r["stage"], r["prediction"]) for r in map(json.loads, per))
    assert rows["joint"] == rows["peft"] == rows["merged"]
    # the joint engine without guessed tokens: its own cache key (a real comparison), the same questions
    out = evaluate(_cfg(tmp_path, tiny_lm, adapters, stages=stages, engine="joint", draft_tokens=0, run="joint-1tok"),
                   examples=examples, scorer=lexical)
    assert out["generation"]["generated"] == 4 * 3
    per = (tmp_path / "results" / "joint-1tok" / "per_example.jsonl").read_text().splitlines()
    assert sorted((r["topic_id"], r["stage"], r["prediction"]) for r in map(json.loads, per)) == rows["peft"]
    with pytest.raises(EvalError, match="draft_tokens.*engine=joint"):
        evaluate(_cfg(tmp_path, tiny_lm, adapters, stages=stages, engine="merged", draft_tokens=0, run="x"),
                 examples=examples, scorer=lexical)
