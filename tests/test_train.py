"""The RAC chain on a tiny random Llama: SFT and DPO steps move only the adapter, labels cover only the
question, pairs are well-formed, and a killed `racq train all` resumes without redoing finished steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from racq.config import TrainConfig, load_config


def tiny_cfg(tiny_lm, tmp_path, **kw) -> TrainConfig:
    base = dict(base_model=str(tiny_lm), adapters_dir=str(tmp_path / "adapters"), run_dir=str(tmp_path / "run"),
                t1_limit=10, t2_limit=4, eval_examples=2, max_steps=1, batch_size=2, tries=2,
                max_new_tokens=6, gen_batch_size=4, chosen="gold", save_steps=1, passage_tokens=24,
                warmup_steps=0)
    return load_config(TrainConfig, None, {**base, **kw})


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def chain(tiny_lm, tmp_path_factory):
    """sft + uncond + pairs + dpo, run once for the module."""
    from racq.train.pipeline import train_all

    cfg = tiny_cfg(tiny_lm, tmp_path_factory.mktemp("chain"))
    train_all(cfg, log=lambda *_: None)
    return cfg


def test_sft_writes_adapter_with_manifest_and_moves_only_lora(chain, tiny_lm):
    sft = Path(chain.adapters_dir) / "sft"
    manifest = json.loads((sft / "manifest.json").read_text())
    assert manifest["split"] == "t1" and manifest["base_model"] == str(tiny_lm)
    assert manifest["metrics"]["steps"] == 1 and manifest["data_hash"]
    weights = _state(sft / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    # LoRA B starts at zero: one optimizer step must make it non-zero
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    # the base model folder is untouched (no weights written next to it)
    assert sorted(p.name for p in Path(tiny_lm).glob("*.safetensors")) == ["model.safetensors"]


def test_dpo_step_changes_policy_not_base_and_keeps_sft_reference(chain, tiny_lm):
    from transformers import AutoModelForCausalLM

    ad = Path(chain.adapters_dir)
    sft, aligned = _state(ad / "sft" / "adapter_model.safetensors"), _state(ad / "aligned" / "adapter_model.safetensors")
    assert set(sft) == set(aligned)  # same shape: aligned loads on the one base next to sft
    assert any(not torch.equal(sft[k], aligned[k]) for k in sft)
    manifest = json.loads((ad / "aligned" / "manifest.json").read_text())
    assert manifest["reference_adapter"] == "sft" and manifest["kind"] == "DPO+NLL"
    assert manifest["config"]["beta"] == 0.2 and manifest["config"]["nll_weight"] == 0.5
    base_now = AutoModelForCausalLM.from_pretrained(tiny_lm).state_dict()
    base_file = _state(Path(tiny_lm) / "model.safetensors")
    assert all(torch.equal(base_now[k], v) for k, v in base_file.items() if k in base_now)


def test_pairs_file_is_trl_ready_with_provenance(chain):
    from racq.train.pairs import read_pairs

    rows = list(read_pairs(Path(chain.run_dir) / "pairs.jsonl"))
    assert rows, "no pairs written"
    for r in rows:
        assert r["prompt"][0]["role"] == "system" and r["chosen"][0]["role"] == "assistant"
        assert r["chosen_text"] != r["rejected_text"]
        assert r["alpha"] == 0.7 and r["source"] == "synthetic" and len(r["passage_ids"]) == 3
        assert 0.0 <= r["rejected_uncond_share"] <= 1.0
    stats = json.loads((Path(chain.run_dir) / "pairs.stats.json").read_text())
    assert stats["written"] + stats["dropped_identical"] + stats["dropped_no_question"] == stats["examples"]


def test_faithfulness_filter_keeps_the_most_faithful_chosen_and_least_faithful_rejected(tiny_lm, tmp_path):
    """Several candidates per side, ranked by the scorer: every kept pair's chosen outranks its rejected,
    the kept candidates are the extreme ones, and every example is accounted for."""
    from racq.scoring.faithfulness import FaithfulnessConfig, Scorer
    from racq.train.common import rank_own_passages, select_examples
    from racq.train.pairs import build_pairs, faithfulness_key, read_pairs
    from racq.train.sft import train_sft

    cfg = tiny_cfg(tiny_lm, tmp_path, chosen="sample", t2_limit=6, chosen_candidates=3, rejected_candidates=2,
                   faithfulness_filter=True, max_new_tokens=12)
    train_sft(cfg, query_only=False)
    train_sft(cfg, query_only=True)
    stats = build_pairs(cfg)
    assert (stats["written"] + stats["dropped_identical"] + stats["dropped_no_question"]
            + stats["dropped_not_more_faithful"] == stats["examples"] == 6)
    rows = list(read_pairs(Path(cfg.run_dir) / "pairs.jsonl"))
    assert rows and len(rows) == stats["written"]
    scorer = Scorer(FaithfulnessConfig(embedder=cfg.embedder))
    exs = {e.topic_id: e for e in select_examples(cfg, "t2", cfg.t2_limit)}
    ranked = dict(zip(exs, rank_own_passages(list(exs.values()), cfg.embedder, cfg.top_k)))
    for r in rows:
        assert r["candidates"] == [3, 2]
        c = scorer.score(r["query"], ranked[r["topic_id"]], r["chosen_text"])
        rj = scorer.score(r["query"], ranked[r["topic_id"]], r["rejected_text"])
        assert faithfulness_key(c) > faithfulness_key(rj)  # recomputed, not trusted from the file
        assert r["chosen_faith"]["hallucinated"] == c["hallucinated"]


def test_pick_takes_the_extreme_candidate_and_prefers_questions():
    from racq.train.pairs import _pick

    def s(n, hall, sup, novel):
        return {"n_options": n, "hallucinated": hall, "option_support": sup, "novel_content": novel}

    texts = ["Which one?", "Do you mean A or B?", "Do you mean A or Z?", "no question here"]
    scores = [s(0, 0, 1.0, 0.2), s(2, 0, 1.0, 0.1), s(2, 1, 0.5, 0.4), s(0, 0, 1.0, 0.0)]
    assert _pick(texts, 4, scores, best=True) == [(1, scores[1])]    # grounded options beat none
    assert _pick(texts, 4, scores, best=False) == [(2, scores[2])]   # an invented option is worst
    assert _pick(texts, 2, None, best=True) == [(0, None), (2, None)]  # no scorer: first sample with a "?"


def test_completion_only_labels_cover_exactly_the_question(tiny_lm, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from racq.models import load_base
    from racq.train.sft import build_sft_records

    cfg = tiny_cfg(tiny_lm, tmp_path, t1_limit=3)
    model, tok = load_base(tiny_lm)
    records, examples = build_sft_records(cfg, tok, query_only=False)
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=Dataset.from_list(records),
                         args=SFTConfig(output_dir=str(tmp_path / "o"), completion_only_loss=True, use_cpu=True,
                                        bf16=False, report_to=[], max_length=None))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
    for row, ex in zip(range(len(records)), examples):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        text = tok.decode(labelled)
        assert text.replace("<|im_end|>", "").strip() == ex.gold_question
        # and nothing of the prompt is labelled
        assert "User Query" not in text and "Passages" not in text


def test_killed_train_all_resumes_and_skips_finished_steps(tiny_lm, tmp_path):
    cfg = tiny_cfg(tiny_lm, tmp_path)
    sets = [f"--set={k}={v}" for k, v in {
        "base_model": cfg.base_model, "adapters_dir": cfg.adapters_dir, "run_dir": cfg.run_dir, "t1_limit": 10,
        "t2_limit": 4, "eval_examples": 2, "max_steps": 1, "batch_size": 2, "tries": 2, "max_new_tokens": 6,
        "gen_batch_size": 4, "chosen": "gold", "passage_tokens": 24, "warmup_steps": 0}.items()]
    cmd = [sys.executable, "-m", "racq.cli", "train", "all", *sets]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RACQ_TEST_KILL_AFTER", None)
    state = Path(cfg.run_dir) / "state.json"
    log = tmp_path / "killed.log"  # a file, not a PIPE: nobody reads while it runs, and a full pipe blocks the child
    with log.open("wb") as out:
        # the pipeline's test hook SIGKILLs the process right after sft's state is written: a kill -9 at a
        # known point of the chain (between sft and uncond), no poll racing the training
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**env, "RACQ_TEST_KILL_AFTER": "sft"})
        try:
            rc = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            rc = "timeout (600 s)"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left in its session (and it, on a timeout)
            except ProcessLookupError:
                pass
            proc.wait()
    assert rc == -signal.SIGKILL, f"rc={rc}\n" + log.read_text(errors="replace")[-2000:]
    assert list(json.loads(state.read_text())["finished"]) == ["sft"]
    sft_mtime = (Path(cfg.adapters_dir) / "sft" / "adapter_model.safetensors").stat().st_mtime
    assert not (Path(cfg.adapters_dir) / "aligned").exists()
    from racq.models import list_stages

    assert [s.name for s in list_stages(cfg.adapters_dir)] == ["base", "sft"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "sft: already finished" in out.stdout + out.stderr
    assert (Path(cfg.adapters_dir) / "sft" / "adapter_model.safetensors").stat().st_mtime == sft_mtime
    finished = json.loads(state.read_text())["finished"]
    assert list(finished) == ["sft", "uncond", "pairs", "dpo"]
    assert [s.name for s in list_stages(cfg.adapters_dir)] == ["base", "sft", "aligned"]
