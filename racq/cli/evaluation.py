"""racq eval."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from racq.cli.common import DataOpt, SetOpt, VllmUrlOpt, app, data_errors, fail
from racq.config import load_config


# ------------------------------------------------------------------ evaluation
@app.command("eval")
def eval_cmd(split: str = typer.Option("test", help="Data split: test | t1 | t2 | all (every row, for a --data "
                                      "file you held out yourself)."),
             stages: str = typer.Option("base,uncond,sft,aligned", help="Comma list of stages."),
             limit: int = typer.Option(40, help="Examples per dataset (0 = all)."),
             passages: str = typer.Option("own", help="own (the example's passages, ranked) | retrieved (index)."),
             datasets: str = typer.Option("paqa,cambignq", help="Comma list of datasets."),
             run: str = typer.Option("default", help="Results folder: results/RUN/."),
             batch_size: int = typer.Option(8, help="Prompts per batched generate call."),
             base_model: Optional[str] = typer.Option(None, help="Base model: a folder or a name from `racq "
                                                      "models add` (default: the cached SmolLM2)."),
             adapters_dir: Optional[str] = typer.Option(None, help="Stage adapters folder (default: models/adapters)."),
             nli_model: Optional[str] = typer.Option(None, help="Local NLI model folder (default: NLI skipped)."),
             data: Optional[Path] = DataOpt,
             index: Optional[str] = typer.Option(None, "--index", help="A named index (`racq index list`): the "
                                                 "one --data rows' passage_ids point into, and the one "
                                                 "--passages retrieved searches."),
             engine: Optional[str] = typer.Option(None, "--engine", help="peft (default, the reference) | joint "
                                                  "| merged | vllm (a vLLM server at --vllm-url)."),
             vllm_url: Optional[str] = VllmUrlOpt,
             set_: Optional[List[str]] = SetOpt):
    """Generate every stage's questions (greedy, batched, cached), score them against the gold question and
    the passages, and write results/RUN/{metrics.json, per_example.jsonl, report.md, plots.png}.
    --set takes any field of racq.eval.run.EvalConfig (max_new_tokens, top_k, n_boot, cache_dir, ...).

    Example: racq eval --stages base,uncond,sft,aligned --limit 40 --passages own --run v1
    Example: racq eval --data my-heldout.jsonl --split all --limit 0 --run mine
    Example: racq eval --engine vllm --vllm-url http://127.0.0.1:8011 --limit 12 --run vllm
    Example: racq eval --stages sft,aligned --set best_of=5 --set best_of_stages=aligned --limit 0 --run best5
    """
    from racq.eval.run import EvalConfig, EvalError, evaluate
    from racq.models import ModelMissing
    from racq.vllmclient import VLLMError

    values = {"split": split, "stages": stages, "limit": limit, "passages": passages, "datasets": datasets,
              "run": run, "batch_size": batch_size}
    values.update({k: v for k, v in {"base_model": base_model, "adapters_dir": adapters_dir,
                                     "nli_model": nli_model, "data": data, "index": index,
                                     "engine": engine, "vllm_url": vllm_url}.items()
                   if v is not None})
    try:
        bad = [s for s in set_ or [] if "=" not in s]
        if bad:
            raise ValueError(f"--set needs key=value, got {bad}")
        cfg = load_config(EvalConfig, None, {**values, **dict(s.split("=", 1) for s in set_ or [])})
        with data_errors():  # and a missing or stale --index
            metrics = evaluate(cfg)
    except (EvalError, ModelMissing, VLLMError, ValueError, OSError) as e:  # a bad --data row is a ValueError too
        fail(str(e))
    folder = Path(cfg.results_dir) / cfg.run
    print(f"{folder}/report.md")
    for ds, res in metrics["results"].items():
        for st, m in res.items():
            rl = m.get("rougeL", {}).get("mean")
            print(f"{ds:<9} {st:<12} ROUGE-L {'—' if rl is None else f'{rl:.3f}'}  "
                  f"grounded {m['grounded']['mean']:.3f}  hallucinated {m['hallucinated']['mean']:.3f}  "
                  f"option support {m['option_support']['mean']:.3f}")

