"""Evidence selection at equal prompt budget: the evidence ceiling and the gold question's grounding
against what the prompt actually shows, per evidence mode (racq.evidence).

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/bench_evidence.py --split t2 --json results/evidence-t2.json

Per example of the split (own passages ranked by the embedder, all of them, as racq.train.common does):
the prompt's passages for each variant, then
- evidence ceiling = share of examples whose prompt passages hold evidence for >= 2 of the query's
  AmbigNQ interpretations (racq.scoring.usefulness.evidence), and the mean share of interpretations evidenced;
- gold grounded = the gold question offers >= 1 option and every option is supported by the prompt's
  passages (the faithfulness scorer, as `racq eval`'s grounded), and its option support;
- block tokens = mean length of the passage block in the base model's tokens (the speed cost).
Variants: lead 3x64 (today), lead 6x32 (more passages cut shorter, same budget), mmr (lead's budget),
every own passage whole (no budget: what any selection from these passages could reach at most), and
an *oracle* at lead's budget (`oracle_passages`): it reads the interpretations, so it is a measurement
of what the budget allows, never a prompt (racq.evidence must not see interpretations). It picks, greedily,
the sentence/window units (as racq.evidence.mmr splits them) that evidence the most interpretations not
yet evidenced, until none adds one or the budget is spent. If it reaches the no-budget ceiling with a
fraction of lead's tokens, the budget is not what limits the evidence ceiling; knowing which units hold
the readings is. Choose on t2; report test once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.config import DEFAULT_BASE_MODEL, DEFAULT_EMBEDDER, REPO_ROOT  # noqa: E402
from racq.eval.significance import bootstrap_ci  # noqa: E402
from racq.evidence import _ntok, block, prompt_passages  # noqa: E402
from racq.eval.run import pick_examples  # noqa: E402
from racq.train.common import rank_own_passages  # noqa: E402
from racq.scoring.usefulness import _keys, evidence, interpretations_for  # noqa: E402
from racq.data import Passage  # noqa: E402
from racq.evidence import _group  # noqa: E402

VARIANTS = {"lead 3x64": (3, 64, "lead"), "lead 6x32": (6, 32, "lead"), "mmr (3x64 budget)": (3, 64, "mmr"),
            "all own passages, whole (no budget; upper bound)": (1000, 10 ** 6, "lead"),
            "oracle (3x64 budget; reads the interpretations)": (3, 64, "oracle")}


def oracle_passages(query: str, passages: list[Passage], interps, budget: int, tokenizer=None) -> list[Passage]:
    """Units of `passages` that evidence the most not-yet-evidenced interpretations, greedily, within
    `budget` tokens of passage block (module docstring; the same evidence test as usefulness.evidence)."""
    from racq.scoring.faithfulness import split_units

    keys = [sum(_keys(query, it), []) for it in interps]  # every key: distinguishing words or an answer
    units = []  # (passage rank, unit order, text, interpretations it evidences)
    for r, p in enumerate(passages):
        for k, u in enumerate(split_units(p)):
            held = {i for i, ks in enumerate(keys) if any(ws and all(t in u.tokens for t in ws) for ws in ks)}
            if held:
                units.append((r, k, u.text, held))
    head = {r: _ntok(f"[{r + 1}] {p.title}: ", tokenizer) for r, p in enumerate(passages)}
    chosen, used, shown, got = [], 0, set(), set()
    while True:
        # a unit costs its tokens + the joiner (" ... ", 2) in a shown passage, or + "\n[r] title: "
        cost = lambda u: _ntok(u[2], tokenizer) + (2 if u[0] in shown else head[u[0]] + 1)  # noqa: E731
        fits = [(len(u[3] - got), -j, j) for j, u in enumerate(units) if j not in chosen and used + cost(u) <= budget]
        gain, _, j = max(fits, default=(0, 0, None))
        if not gain:
            break
        chosen.append(j)
        used += cost(units[j])
        shown.add(units[j][0])
        got |= units[j][3]
    out = _group([units[j][:3] for j in chosen], passages)
    while chosen and _ntok(block(out), tokenizer) > budget:  # the estimate is close, the check exact
        chosen.pop()
        out = _group([units[j][:3] for j in chosen], passages)
    return out


def run(split: str, datasets: list[str], tokenizer, scorer, limit: int = 0) -> list[dict]:
    exs = pick_examples(datasets, split, limit)
    ranked = rank_own_passages(exs, DEFAULT_EMBEDDER, 1000, REPO_ROOT / "results" / ".cache" / f"ranked-all-{split}.json")
    rows = []
    for e, ps in zip(exs, ranked):
        interps = interpretations_for(e.query)
        for name, (k, n, mode) in VARIANTS.items():
            if mode == "oracle":
                budget = _ntok(block(prompt_passages(e.query, ps, tokenizer, k, n, "lead")), tokenizer)
                shown = oracle_passages(e.query, ps, interps, budget, tokenizer)
            else:
                shown = prompt_passages(e.query, ps, tokenizer, k, n, mode)
            ev = evidence(e.query, shown, interps)
            s = scorer.score(e.query, shown, e.gold_question)
            rows.append({"dataset": e.dataset, "variant": name, "tokens": _ntok(block(shown), tokenizer),
                         "evidence_2plus": ev["evidence_2plus"], "evidence_share": ev["evidence_share"],
                         "gold_grounded": int(s["n_options"] > 0 and not s["hallucinated"]),
                         "gold_option_support": s["option_support"]})
    return rows


def table(rows: list[dict]) -> str:
    cols = ("evidence_2plus", "evidence_share", "gold_grounded", "gold_option_support", "tokens")
    out = ["| dataset | variant | n | evidence ≥ 2 | evidence share | gold grounded | gold option support | block tokens |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for v in VARIANTS:
            sub = [r for r in rows if r["dataset"] == ds and r["variant"] == v]
            cells = []
            for c in cols:
                st = bootstrap_ci([r[c] for r in sub])
                cells.append(f"{st['mean']:.1f}" if c == "tokens" else
                             f"{st['mean']:.3f} [{st['ci_low']:.3f}, {st['ci_high']:.3f}]")
            out.append(f"| {ds} | {v} | {len(sub)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="t2")
    ap.add_argument("--datasets", default="paqa,cambignq")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from racq.scoring.faithfulness import Scorer

    rows = run(args.split, args.datasets.split(","), AutoTokenizer.from_pretrained(str(DEFAULT_BASE_MODEL)),
               Scorer(), args.limit)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
