"""Best-of-N at inference: does picking, among a stage's greedy question and N samples, the one the
project's own scorer likes best (grounded, >= 2 distinct options) make the stage more *useful*?

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/bench_rerank.py --split t2 --limit 100 --json results/rerank-t2.json

Per example of the split (own passages ranked, top 3, the prompt as `racq eval` builds it, lead 3x64):
the stage's greedy question plus `--samples` sampled ones (temperature 0.7, top-p 0.9, seeded). Each is
scored against the top-3 passages by the faithfulness scorer, as `racq eval`'s grounded column is.
The pick needs nothing an app lacks at run time (no interpretations): grounded and >= 2 distinct options
first, then grounded, then not repeating an option, then option support, the greedy question winning
ties. Then both the greedy question and the pick are measured against the query's AmbigNQ
interpretations (racq.scoring.usefulness): useful & grounded, covers >= 1, >= 2 distinct, grounded,
hallucinated, repeats an option, with a paired bootstrap of pick - greedy. A measurement for issue #11
(choose on t2, never on test); it costs N + 1 generations per stage, so it is not the app's path unless
it pays for that. The rule now ships as an opt-in setting (GenConfig.best_of, racq.bestof): Explore,
`racq ask --best-of 5` and `racq eval --set best_of=5` use it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.bestof import pick_key as bestof_key  # noqa: E402
from racq.config import DEFAULT_EMBEDDER, REPO_ROOT, GenConfig  # noqa: E402
from racq.eval.run import pick_examples  # noqa: E402
from racq.eval.significance import bootstrap_ci, paired_test  # noqa: E402
from racq.evidence import prompt_passages  # noqa: E402
from racq.files import write_atomic  # noqa: E402
from racq.prompts import extract_question  # noqa: E402
from racq.scoring.options import repeats_option  # noqa: E402
from racq.scoring.usefulness import interpretations_for, useful_scores  # noqa: E402
from racq.train.common import rank_own_passages  # noqa: E402

COLUMNS = ("useful_grounded", "covers_any", "distinct_options", "grounded", "hallucinated", "repeats")


def pick_key(row: dict) -> tuple:
    """What the pick maximises: run-time signals only (no interpretations); the app's rule (racq.bestof)."""
    return bestof_key(row, bool(row["greedy"]))


def measure(query: str, question: str, passages, interps, scorer, greedy: bool) -> dict:
    faith = scorer.score(query, passages, question)
    grounded = int(faith["n_options"] > 0 and not faith["hallucinated"])
    use = useful_scores(query, question, interps, grounded, [o["core"] for o in faith["options"]])
    return {"question": question, "greedy": int(greedy), "grounded": grounded, "hallucinated": int(faith["hallucinated"]),
            "option_support": faith["option_support"] or 0.0, "repeats": int(repeats_option(question, query)),
            "distinct_options": use["distinct_options"], "covers_any": use["covers_any"],
            "useful_grounded": use["useful_grounded"]}


def run(split: str, datasets: list[str], stages: list[str], samples: int, limit: int, seed: int,
        out: Path | None = None) -> list[dict]:
    from racq.generate import StageModel
    from racq.scoring.faithfulness import Scorer

    sm, scorer = StageModel.load(stages=stages), Scorer()
    exs = [e for e in pick_examples(datasets, split, limit) if interpretations_for(e.query)]
    ranked = rank_own_passages(exs, DEFAULT_EMBEDDER, 3, REPO_ROOT / "results" / ".cache" / f"ranked-rerank-{split}.json")
    prompts = [sm.passage_prompt(e.query, prompt_passages(e.query, ps, sm.tokenizer, 3, 64, "lead"))
               for e, ps in zip(exs, ranked)]
    rows = []
    for stage in stages:
        greedy = sm.generate(prompts, stage, GenConfig())
        sampled = [sm.generate(prompts, stage, GenConfig(do_sample=True), seed=seed + 1000 * j) for j in range(samples)]
        for i, (e, ps) in enumerate(zip(exs, ranked)):
            interps = interpretations_for(e.query)
            cands = [measure(e.query, extract_question(greedy[i]), ps, interps, scorer, True)]
            cands += [measure(e.query, extract_question(s[i]), ps, interps, scorer, False) for s in sampled]
            pick = max(cands, key=pick_key)
            rows.append({"dataset": e.dataset, "stage": stage, "query": e.query, "greedy": cands[0], "pick": pick,
                         "n_candidates": len(cands)})
        print(f"[rerank] {stage}: {len(exs)} examples x {samples + 1} candidates", flush=True)
        print(table([r for r in rows if r["stage"] == stage]), flush=True)
        if out:  # after every stage, so a long run that is stopped keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out, json.dumps(rows))  # a kill during the write leaves the previous stage's file whole
    return rows


def table(rows: list[dict]) -> str:
    out = ["| dataset | stage | n | " + " | ".join(f"{c}: greedy → best-of-N (Δ, p)" for c in COLUMNS) + " |",
           "|---|---|---:|" + "---|" * len(COLUMNS)]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for st in dict.fromkeys(r["stage"] for r in rows):
            sub = [r for r in rows if r["dataset"] == ds and r["stage"] == st]
            cells = []
            for c in COLUMNS:
                g, p = [r["greedy"][c] for r in sub], [r["pick"][c] for r in sub]
                d = paired_test(p, g)
                cells.append(f"{100 * bootstrap_ci(g)['mean']:.1f} → {100 * bootstrap_ci(p)['mean']:.1f} "
                             f"({100 * d['diff']:+.1f}, p={d['p_bootstrap']:.3f})")
            out.append(f"| {ds} | {st} | {len(sub)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="t2")
    ap.add_argument("--datasets", default="paqa,cambignq")
    ap.add_argument("--stages", default="sft,aligned")
    ap.add_argument("--samples", type=int, default=4, help="sampled candidates besides the greedy one")
    ap.add_argument("--limit", type=int, default=0, help="examples per dataset (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    run(args.split, args.datasets.split(","), args.stages.split(","), args.samples, args.limit, args.seed, args.json)


if __name__ == "__main__":
    main()
