"""What `racq eval` writes: aggregates with bootstrap CIs and paired tests, report.md, plots.png, and
our ROUGE-L next to the RAC paper's.

    from racq.eval.report import paper_table
    print(paper_table(json.load(open("results/v1/metrics.json"))["results"]))   # the README can reuse it
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Sequence

from racq.eval.significance import bootstrap_ci, paired_test
from racq.scoring.metrics import METRICS as REF_METRICS

# Published ROUGE-L of RAC (Kebir et al., ECIR 2026), an 8B model trained and decoded on GPUs.
PAPER_ROUGE_L = {"paqa": 46.83, "cambignq": 36.66, "clariq": 36.25, "qulac": 33.14}
DATASET_NAMES = {"paqa": "PaQa", "cambignq": "CAmbigNQ", "clariq": "ClariQ", "qulac": "Qulac",
                 "clariq_fkw": "ClariQ-FKw"}
NLI_SKIPPED = "skipped: no NLI model configured"
LABELS = {"rouge1": "ROUGE-1 ↑", "rouge2": "ROUGE-2 ↑", "rougeL": "ROUGE-L ↑", "bleu": "BLEU ↑",
          "embed_sim": "embed sim ↑", "hallucinated": "hallucinated ↓", "grounded": "grounded ↑", "repeats_option": "repeats an option ↓", "option_support": "option support ↑",
          "has_options": "has options", "novel_content": "novel content ↓", "parent_precision": "PARENT P ↑",
          "parent_recall": "PARENT R ↑", "parent_f1": "PARENT F1 ↑", "is_question": "is a question ↑",
          "nli_min": "NLI min ↑", "nli_hallucinated": "NLI hallucinated ↓",
          "useful_grounded": "useful & grounded ↑", "covers_any": "covers ≥ 1 interpretation ↑",
          "coverage": "interpretation coverage ↑", "distinct_options": "≥ 2 distinct options ↑",
          "evidence_2plus": "evidence ≥ 2 interpretations", "evidence_share": "evidence share",
          "grounded_prompt": "grounded in the prompt"}
USEFUL_COLUMNS = ("useful_grounded", "covers_any", "coverage", "distinct_options", "evidence_2plus",
                  "evidence_share", "grounded_prompt")
USEFUL_NOTE = (
    "Against AmbigNQ's human interpretations of each query (data/ambignq/, racq.scoring.usefulness). `covers ≥ 1 "
    "interpretation` = at least one option names one of them (distinguishing words or answer); `interpretation "
    "coverage` = share named; `≥ 2 distinct options` = two options that differ and add something beyond the query "
    "(an echo of the query is no option, \"X, or X\" is one); `useful & grounded` = grounded ∧ ≥ 2 distinct ∧ "
    "covers ≥ 1, the headline. Row `gold` only: `evidence ≥ 2 interpretations` = the prompt's passages (as the "
    "prompt shows them) hold evidence for at least two interpretations (the ceiling the prompt allows), `evidence "
    "share` = share of interpretations evidenced, `grounded in the prompt` = the gold question grounded in those "
    "passages (the `grounded` column scores the whole top-k passages).")
FAITH_COLUMNS = ("grounded", "hallucinated", "option_support", "has_options", "repeats_option", "novel_content",
                 "parent_precision", "parent_recall", "parent_f1", "is_question")
KEY_TESTS = ("rougeL", "grounded", "useful_grounded", "covers_any", "hallucinated", "repeats_option",
             "option_support")
PAPER_NOTE = (
    "The paper's numbers come from an 8B model fine-tuned and decoded on GPUs. Ours differ in almost "
    "every respect, so the comparison shows the gap, not a reproduction: a 135M model (SmolLM2-135M-"
    "Instruct) trained on a CPU with LoRA adapters; about 400 training examples and 120 preference pairs "
    "(the CPU recipe) instead of the full training sets, which we do not have; our own topic-hash split of the authors' "
    "PaQa test and CAmbigNQ dev files into test/t1/t2 (so our test set is about a fifth of theirs, and our "
    "training data come from the same files); greedy decoding with at most 32 new tokens from the top-3 "
    "passages trimmed to 64 tokens each; ROUGE-L F-measure from Google's rouge-score with stemming (the "
    "paper's implementation may differ). ClariQ and Qulac ship without passages here, so they are only "
    "evaluated with --passages retrieved, against a Wikipedia corpus that rarely covers their topics.")


# ---------------------------------------------------------------- aggregation
def metric_names(rows: Sequence[dict]) -> list[str]:
    present = {m for r in rows for m, v in r["scores"].items() if v is not None}
    order = list(REF_METRICS) + list(FAITH_COLUMNS) + ["nli_min", "nli_hallucinated"] + list(USEFUL_COLUMNS)
    return [m for m in order if m in present]


def summarise(rows: Sequence[dict], cfg, calibration: dict | None = None) -> dict:
    """metrics.json's content: per dataset and stage, mean [CI] of every metric, and paired tests of
    every stage against cfg.reference_stage on the same examples."""
    stages = ["gold", *cfg.stages]
    names = metric_names(rows)
    results, tests, counts = {}, {}, {}
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        by = {s: sorted((r for r in rows if r["dataset"] == ds and r["stage"] == s), key=lambda r: r["example"])
              for s in stages}
        counts[ds] = len(by[stages[0]])
        results[ds] = {s: {m: bootstrap_ci([r["scores"].get(m) for r in by[s]], cfg.n_boot, seed=cfg.seed)
                           for m in names} for s in stages}
        ref = cfg.reference_stage
        if ref in cfg.stages:
            tests[ds] = {s: {m: paired_test([r["scores"].get(m) for r in by[s]],
                                            [r["scores"].get(m) for r in by[ref]], cfg.n_boot, seed=cfg.seed)
                             for m in names} for s in stages if s != ref}
    return {"config": dataclasses.asdict(cfg), "examples": counts, "metrics": names, "results": results,
            "reference_stage": cfg.reference_stage, "paired_tests": tests,
            "nli": cfg.nli_model or NLI_SKIPPED, "calibration": calibration,
            "paper_rouge_l": {ds: {"paper": PAPER_ROUGE_L.get(ds), "ours": _ours_rouge_l(results, ds)}
                              for ds in results}}


def _ours_rouge_l(results: dict, ds: str) -> dict:
    return {s: round(100 * v["rougeL"]["mean"], 2) for s, v in results.get(ds, {}).items()
            if "rougeL" in v and v["rougeL"]["mean"] is not None and s != "gold"}


# ---------------------------------------------------------------- markdown
def _cell(stat: dict, scale: float = 1.0, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    f = f"{{:.{digits}f}}"
    return f"{f.format(stat['mean'] * scale)} [{f.format(stat['ci_low'] * scale)}, {f.format(stat['ci_high'] * scale)}]"


def _p(p) -> str:
    return " —" if p is None else ("<0.001" if p < 0.001 else f"={p:.3f}")


def significant(test: dict | None, alpha: float = 0.05) -> bool:
    """Both the paired bootstrap and the sign test reject equality (the bootstrap alone is overconfident
    on a handful of examples: with n = 2 every resample of a constant difference has the same sign)."""
    test = test or {}
    return all(test.get(k) is not None and test[k] < alpha for k in ("p_bootstrap", "p_sign"))


def _table(results: dict, tests: dict, stages: Sequence[str], cols: Sequence[str]) -> list[str]:
    lines = ["| stage | " + " | ".join(LABELS.get(c, c) for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for s in stages:
        cells = []
        for c in cols:
            scale, digits = (1.0, 1) if c == "bleu" else (1.0, 3)
            mark = "*" if significant(tests.get(s, {}).get(c)) else ""
            cells.append(_cell(results[s].get(c, {}), scale, digits) + mark)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def paper_table(results: dict, datasets: Sequence[str] | None = None) -> str:
    """Markdown: our ROUGE-L (x100, per stage) next to the RAC paper's, one row per dataset. `results`
    is metrics.json's "results" ({dataset: {stage: {"rougeL": {"mean": ...}}}})."""
    datasets = list(datasets or PAPER_ROUGE_L)
    stages = list(dict.fromkeys(s for ds in results.values() for s in ds if s != "gold"))
    lines = ["| dataset | RAC paper (8B, GPU) | " + " | ".join(f"ours: {s}" for s in stages) + " |",
             "|---|---:|" + "---:|" * len(stages)]
    for ds in datasets:
        ours = _ours_rouge_l(results, ds)
        paper = PAPER_ROUGE_L.get(ds)
        cells = [f"{ours[s]:.2f}" if s in ours else "not run" for s in stages]
        lines.append(f"| {DATASET_NAMES.get(ds, ds)} | {paper if paper is not None else '—'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _calibration_md(cal: dict | None) -> list[str]:
    if not cal:
        return ["Not computed (disabled for this run, or data/calibration/faithfulness.jsonl is missing)."]
    def row(name, b):
        if not b:
            return f"| {name} | 0 | — | — | — | — |"
        prec = "—" if b["precision"] is None else f"{b['precision']:.2f}"
        rec = "—" if b["recall"] is None else f"{b['recall']:.2f}"
        return f"| {name} | {b['n']} | {b['accuracy']:.3f} | {b['kappa']:.3f} | {prec} | {rec} |"
    out = [f"The metric's `hallucinated` flag against {cal['n']} hand-labelled real items ({cal['unfaithful']} "
           f"unfaithful, {cal['faithful']} faithful; data/calibration/, criteria in its README). Precision and "
           "recall are for the unfaithful class.", "",
           "| items | n | accuracy | Cohen's κ | precision | recall |", "|---|---:|---:|---:|---:|---:|",
           row("all", cal), row("not borderline", cal.get("clear"))]
    out += [row(f"source: {s}", b) for s, b in cal.get("by_source", {}).items()]
    if cal.get("nli"):
        out += [row("NLI flag (all)", cal["nli"])]
    out += ["", f"{len(cal.get('disagreements', []))} disagreements are listed in metrics.json (calibration.disagreements)."]
    return out


def _matcher_md(cal: dict | None) -> list[str]:
    if not cal:
        return ["Not computed (data/calibration/usefulness.jsonl is missing)."]
    def row(name, b):
        return f"| {name} | {b['n']} | {b['accuracy']:.3f} | {b['kappa']:.3f} |" if b else f"| {name} | 0 | — | — |"
    return ["The matcher's \"this question names this interpretation\" against hand labels of question × "
            "interpretation pairs from the t1/t2 splits (data/calibration/usefulness.jsonl, criteria in its README).",
            "", "| pairs | n | accuracy | Cohen's κ |", "|---|---:|---:|---:|", row("all", cal),
            row("not borderline", cal.get("clear"))] + [row(f"source: {s}", b) for s, b in cal.get("by_source", {}).items()]


def report_markdown(metrics: dict) -> str:
    cfg = metrics["config"]
    ref = metrics["reference_stage"]
    gen = metrics.get("generation", {})
    stages = ["gold", *cfg["stages"]]
    out = [f"# RACQ evaluation: {cfg['run']}", "",
           f"Split `{cfg['split']}`, passages `{cfg['passages']}` (top {cfg['top_k']}, {cfg['passage_tokens']} tokens "
           f"each), greedy decoding{_best_of_text(gen.get('best_of'))}, at most {cfg['max_new_tokens']} new tokens. "
           "Examples per dataset: "
           + ", ".join(f"{DATASET_NAMES.get(d, d)} {n}" for d, n in metrics["examples"].items()) + ".",
           f"Adapters: " + ", ".join(f"{s} `{h}`" for s, h in metrics.get("adapter_hashes", {}).items()) + ".",
           "Training (adapter manifests): " + ("; ".join(
               (f"{s}: {m.get('kind') or '?'} on {m['n_pairs']} preference pairs" if m.get("n_pairs") else
                f"{s}: {m.get('kind') or '?'} on {m.get('examples') or '?'} {m.get('split') or ''} examples")
               for s, m in metrics.get("training", {}).items()) or "no manifest found") + ".",
           f"Generation: {gen.get('generated', 0)} questions generated in {gen.get('generate_calls', 0)} batched "
           f"calls, {gen.get('cached', 0)} from the cache.", "",
           "Cells: mean [95% bootstrap CI] over examples. ↑ higher is better, ↓ lower is better. "
           f"`*`: differs from `{ref}` on the same examples (paired bootstrap and sign test both p < 0.05). Row `gold` is the "
           "gold question scored against the same passages (how grounded the references themselves are). "
           "`grounded` = the question offers at least one option and every option is supported by the passages "
           "(the headline rate: a question that offers nothing clarifies nothing). `repeats an option` = "
           "the same option offered twice (\"the final or the final?\"), counted once by the other columns. "
           "`hallucinated` = the question offers at least one option the passages do not support; a question "
           "with no option cannot hallucinate one, so read it with `has options`. `uncond` is the query-only "
           "model: it sees no passages and is scored against the passages the other stages saw."
           + (" `base` replies are primed with an opener picked per query from " + _openers_text(cfg["base_openers"])
              + " (untuned, it answers instead of asking)."
              if "base" in cfg["stages"] and cfg.get("base_openers") else ""),
           "", f"NLI: {metrics['nli'] if metrics['nli'] == NLI_SKIPPED else 'model ' + str(metrics['nli'])}.", ""]
    names = metrics["metrics"]
    for ds, res in metrics["results"].items():
        tests = metrics["paired_tests"].get(ds, {})
        out += [f"## {DATASET_NAMES.get(ds, ds)} (n = {metrics['examples'][ds]})", "", "### Against the gold question", ""]
        out += _table(res, tests, [s for s in stages if s != "gold"], [m for m in REF_METRICS if m in names])
        out += ["", "### Faithfulness to the passages", ""]
        out += _table(res, tests, stages, [m for m in (*FAITH_COLUMNS, "nli_min", "nli_hallucinated") if m in names])
        if any(m in names for m in USEFUL_COLUMNS):
            out += ["", "### Usefulness: the query's human interpretations", "", USEFUL_NOTE, ""]
            out += _table(res, tests, stages, [m for m in USEFUL_COLUMNS if m in names])
        if tests:
            keys = [m for m in KEY_TESTS if m in names]
            out += ["", f"### Paired tests against `{ref}` (difference stage − {ref} [95% CI], bootstrap p, sign-test p)", "",
                    "| stage | " + " | ".join(LABELS.get(m, m) for m in keys) + " |", "|---|" + "---|" * len(keys)]
            for s, per in tests.items():
                cells = ["—" if per[m]["diff"] is None else
                         f"{per[m]['diff']:+.3f} [{per[m]['ci_low']:+.3f}, {per[m]['ci_high']:+.3f}] "
                         f"p{_p(per[m]['p_bootstrap'])}, sign p{_p(per[m]['p_sign'])}" for m in keys]
                out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Calibration of the faithfulness metric against hand labels", ""] + _calibration_md(metrics.get("calibration"))
    out += ["", "## Agreement of the usefulness matcher with hand labels", ""] + _matcher_md(metrics.get("usefulness_calibration"))
    out += ["", "## Our ROUGE-L next to the RAC paper", "", paper_table(metrics["results"]), "", PAPER_NOTE, ""]
    return "\n".join(out)


# ---------------------------------------------------------------- plots
def plot(metrics: dict, path: Path) -> Path:
    """Hallucination rate, novel content and ROUGE-L per stage and dataset, with 95% CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("hallucinated", "hallucination rate ↓ (share of questions)", True),
              ("novel_content", "novel content ↓ (share of content words)", True),
              ("rougeL", "ROUGE-L vs gold ↑", False)]
    datasets = list(metrics["results"])
    stages = ["gold", *metrics["config"]["stages"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    width = 0.8 / max(1, len(datasets))
    for ax, (m, title, with_gold) in zip(axes, panels):
        shown = [s for s in stages if with_gold or s != "gold"]
        x = np.arange(len(shown))
        for k, ds in enumerate(datasets):
            stats = [metrics["results"][ds][s].get(m, {}) for s in shown]
            mean = np.array([st.get("mean") if st.get("mean") is not None else np.nan for st in stats], float)
            lo = np.array([st.get("ci_low") if st.get("ci_low") is not None else np.nan for st in stats], float)
            hi = np.array([st.get("ci_high") if st.get("ci_high") is not None else np.nan for st in stats], float)
            err = np.nan_to_num(np.vstack([mean - lo, hi - mean]))
            pos = x + (k - (len(datasets) - 1) / 2) * width
            ax.bar(pos, np.nan_to_num(mean), width, yerr=err, capsize=3, label=DATASET_NAMES.get(ds, ds))
            if m == "hallucinated":  # a stage that offers no option cannot hallucinate one: show how many do
                share = [metrics["results"][ds][s].get("has_options", {}).get("mean") for s in shown]
                ax.plot(pos, [np.nan if v is None else v for v in share], "kD", markersize=4,
                        label="share offering options" if k == 0 else None)
        ax.set_xticks(x, shown, rotation=30)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"racq eval: {metrics['config']['run']} (95% bootstrap CIs; gold = reference questions)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_run(folder: Path, rows: Sequence[dict], metrics: dict) -> Path:
    """metrics.json, per_example.jsonl, report.md and plots.png in `folder` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "per_example.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    (folder / "report.md").write_text(report_markdown(metrics), encoding="utf-8")
    plot(metrics, folder / "plots.png")
    return folder


def _best_of_text(best: dict | None) -> str:
    """The report's note on racq.bestof picks (GenConfig.best_of), empty for a greedy-only run."""
    if not best:
        return ""
    kept = ", ".join(f"{s} {best['kept_sample'][s]} of {best['of'][s]}" for s in best["stages"])
    guard = best.get("sample_guard")  # absent in runs made before the samples had a guard of their own
    drawn = f"seeded samples drawn with no {guard}-gram twice" if guard else "seeded samples"
    return (f"; stages {', '.join(best['stages'])}: best of {best['n']} (the greedy question and {best['n'] - 1} "
            f"{drawn}, the one the faithfulness scorer prefers kept, as the app's best_of does; a sample "
            f"was kept for {kept})")


def _openers_text(openers) -> str:
    """'"Which one: the" (5 in 10), "Do you ..." (3 in 10)': each opener once, with its weight."""
    counts = Counter(openers)  # keeps first-seen order
    return ", ".join(f'"{o}" ({n} in {len(openers)})' for o, n in counts.items())
